"""Helpers for the deployment checks: the files under test, parsed."""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICES = ("intake", "validation", "supplementation", "referral", "retraction", "console")
# Services that sign agency notices and so need the signing keys.
SIGNERS = {"referral", "retraction"}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def settings_env_names() -> set[str]:
    """The environment variables shared/settings.py reads (names, upper case)."""
    from shared.settings import Settings

    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        names.add(str(alias).upper() if isinstance(alias, str) else name.upper())
    return names


# Read by the OpenTelemetry SDK rather than by Settings.
OTEL_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_BSP_SCHEDULE_DELAY"}
