"""Intake: the ESP-facing HTTP API (/ispws, and the JSON /v1). Publishes what ESPs ask for;
keeps only what an unfinished report needs (its draft, files and lifecycle) beside the timeline."""
