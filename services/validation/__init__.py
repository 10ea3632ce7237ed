"""Validation: checks each submitted report against the report rules."""
