"""The console: a read-only web view of every report, agency and correction, built from the
event topics."""
