"""Intake: the ESP-facing HTTP API. Publishes what ESPs ask for; owns no other state."""
