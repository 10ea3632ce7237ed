"""Documents generated from the code, kept in the repository and checked in CI.

- docs/asyncapi.yaml: every topic, who publishes and who consumes it, and each message's schema,
  from the FastStream brokers of all services (merged into one document);
- docs/openapi-intake.json and docs/openapi-analyst.json: the HTTP APIs, from the FastAPI apps;
- deploy/k8s/routing-configmap.yaml: deploy/config/routing.yaml as a Kubernetes ConfigMap;
- deploy/kafka/access.sh (and as deploy/k8s/kafka-access-configmap.yaml): every Kafka principal's
  SCRAM user and ACLs, from the services' code and the routing file's agencies;
- deploy/k8s/secrets.yaml: the placeholder Secrets of those principals (tipline/credentials.py);
- the table "Who owns what" in docs/architecture.md, from tipline/ownership.py (between the
  markers `SECTION_START` and `SECTION_END`; the rest of the document is written by hand).

`tipline docs` writes them; `tipline docs --check` (and tests/deploy/test_generated.py) fails when
a committed file differs from what the code says.
"""

import importlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared import topics
from shared.contracts import (
    AgencyNotice,
    DeadLetter,
    ReportDraftChanged,
    ReportSubmitted,
    RetractReport,
    TimelineFacts,
)
from shared.settings import Settings
from tipline import ownership

ROOT = Path(__file__).resolve().parent.parent
FASTSTREAM_SERVICES = ("validation", "supplementation", "referral", "retraction")
# Topics published with broker.publish (no declared publisher), so FastStream cannot see them.
UNDECLARED: dict[str, tuple[type, str, str]] = {
    topics.REPORTS_SUBMITTED: (ReportSubmitted, "Intake", "a report an ESP finished"),
    topics.REPORTS_DRAFTS: (ReportDraftChanged, "Intake", "a step of a report still open"),
    topics.RETRACTIONS_REQUESTED: (
        RetractReport, "Intake", "an ESP retracts its report, or an unfinished one is abandoned"),
    topics.AGENCY_PREFIX + "{agency_id}": (
        AgencyNotice, "Notices",
        "referral, retraction and the analyst API: signed notices to one agency (key: report id)"),
    topics.DEAD_LETTERS: (
        DeadLetter, "Consumers",
        "validation, supplementation, referral, retraction: a message the service could not "
        "process, with its cause and what the message's seal covers (sealed by the service)"),
    topics.DEAD_LETTERS_INTAKE: (
        DeadLetter, "Intake", "a message intake could not process (sealed by intake)"),
    topics.REPORT_FACTS: (
        TimelineFacts, "Facts",
        "validation, supplementation, referral, retraction: what each learned about reports, "
        "a batch at a time, for their timelines (intake keeps them; key: the service)"),
}


def _apps(settings: Settings) -> tuple[list[Any], Any, Any]:
    """Every service's broker, the intake app and the analyst app, built as the services do."""
    brokers = []
    analyst = None
    for name in FASTSTREAM_SERVICES:
        app = importlib.import_module(f"services.{name}.main").create_app(settings)
        brokers.append(app.broker)
        analyst = getattr(app, "analyst_api", analyst)
    intake = importlib.import_module("services.intake.main").create_app(settings)
    brokers.append(intake.state.broker)
    return brokers, intake, analyst


def _undeclared(settings: Settings) -> KafkaBroker:
    broker = KafkaBroker(settings.kafka_bootstrap_servers)
    for topic, (model, who, description) in UNDECLARED.items():
        broker.publisher(topic, schema=model, title=f"{topic}:{who}Publisher",
                         description=description)
    return broker


def generate() -> dict[Path, str]:
    """Path (relative to the repository) -> content."""
    # Building the apps logs what a service would at start (agencies without keys): not news here.
    logging.getLogger("tipline").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        from shared.signing import ensure_keys

        ensure_keys(Path(tmp) / "keys")  # the signing services need a key to be built
        settings = Settings(
            kafka_bootstrap_servers="kafka:9092",
            redis_url="redis://redis:6379/0",
            tipline_keys_dir=Path(tmp) / "keys",
            tipline_files_dir=Path(tmp) / "files",
        )
        brokers, intake, analyst = _apps(settings)
        spec = AsyncAPI(
            *brokers, _undeclared(settings),
            title="tipline", version="0.1.0", schema_version="3.0.0",
            description="Every topic of tipline. JSON messages; the Kafka key is the report id.",
        ).to_specification()
        asyncapi = json.loads(spec.to_json())
        files = {
            Path("docs/asyncapi.yaml"): _header("tipline docs") + yaml.safe_dump(
                asyncapi, sort_keys=True, allow_unicode=True, width=100),
            Path("docs/openapi-intake.json"): _json(intake.openapi()),
        }
        if analyst is not None:
            files[Path("docs/openapi-analyst.json")] = _json(analyst.openapi())
    files[Path("deploy/k8s/routing-configmap.yaml")] = _configmap(
        "tipline-routing", "routing.yaml", (ROOT / "deploy/config/routing.yaml").read_text(),
        "deploy/config/routing.yaml")
    files.update(_access_files())
    files[Path("docs/architecture.md")] = _section(
        (ROOT / "docs/architecture.md").read_text(), ownership.table())
    return files


SECTION_START = "<!-- generated by `tipline docs` from"
SECTION_END = "<!-- end of generated -->"


def _section(document: str, generated: str) -> str:
    """`document` with what lies between its marker lines replaced by `generated`."""
    head, marker, rest = document.partition(SECTION_START)
    start_line, _, rest = rest.partition("\n")
    _, end, tail = rest.partition(SECTION_END)
    if not marker or not end:
        raise ValueError(f"no {SECTION_START!r} ... {SECTION_END!r} section")
    return f"{head}{marker}{start_line}\n{generated}{end}{tail}"


def _access_files() -> dict[Path, str]:
    """Who may do what on Kafka (tipline/access.py), and the placeholder Secrets of every
    principal: both follow the services' code and the agencies of the routing file."""
    from tipline import access, credentials

    agency_ids = access.routing_agencies()
    script = access.access_script(access.kafka_acls(access.subscriptions(), agency_ids))
    return {
        Path("deploy/kafka/access.sh"): script,
        Path("deploy/k8s/kafka-access-configmap.yaml"): _configmap(
            "tipline-kafka-access", "access.sh", script, "the code (tipline/access.py)"),
        Path("deploy/k8s/secrets.yaml"): credentials.PLACEHOLDER_HEADER
        + credentials.k8s_secrets(None, agency_ids),
    }


def _configmap(name: str, key: str, text: str, source: str) -> str:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "tipline",
                     "labels": {"app.kubernetes.io/part-of": "tipline"}},
        "data": {key: text},
    }
    return _header("tipline docs", source) + yaml.dump(
        manifest, Dumper=_BlockDumper, sort_keys=False, width=100)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the routing file reads as itself."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def _header(command: str, source: str = "the code") -> str:
    return f"# Generated from {source} by `{command}`: do not edit by hand.\n"


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def stale(root: Path = ROOT) -> list[Path]:
    """Generated files whose committed content differs from what the code says now."""
    return [p for p, text in generate().items()
            if not (root / p).exists() or (root / p).read_text() != text]


def main(check: bool = False) -> int:
    if check:
        if paths := stale():
            print("out of date (run `tipline docs` and commit):", *map(str, paths), sep="\n  ")
            return 1
        print("generated documents match the code")
        return 0
    for path, text in generate().items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text)
        print(f"wrote {path}")
    return 0


def add_commands(sub: Any) -> None:
    docs = sub.add_parser("docs", help="write AsyncAPI, OpenAPI and generated deploy files")
    docs.add_argument("--check", action="store_true",
                      help="only compare with the committed files; exit 1 when they differ")
    docs.set_defaults(func=lambda args: main(check=args.check))
