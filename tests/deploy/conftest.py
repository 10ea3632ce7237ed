"""Helpers for the deployment checks: the files under test, parsed."""

from dataclasses import dataclass
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


DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    """One stage of a multi-stage Dockerfile: what it is built FROM (an image or an earlier
    stage) and its instructions, each (KEYWORD, arguments) with continued lines joined."""

    name: str
    base: str
    instructions: list[tuple[str, str]]


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """The stages of a Dockerfile, in order, by name (an unnamed stage by its index)."""
    stages: dict[str, Stage] = {}
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, inside a continued instruction too
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
        else:
            logical.append(pending)
            pending = ""
    assert not pending, f"{path.name} ends inside a continued instruction"
    stage: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            base, *alias = args.split()
            assert not alias or (len(alias) == 2 and alias[0].upper() == "AS"), line
            stage = Stage(alias[1] if alias else str(len(stages)), base, [])
            assert stage.name not in stages, f"two stages named {stage.name}"
            stages[stage.name] = stage
        else:
            assert stage is not None, f"{line!r} before any FROM"
            stage.instructions.append((keyword, args))
    return stages


def stage_chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages an image of `target` is built of: the one FROM an image first, `target` last."""
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain
