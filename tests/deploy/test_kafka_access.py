"""The Kafka ACL one-shot (deploy/kafka/access.sh) grants each principal exactly what the code
says it needs: a service writes the topics the catalogue (shared.topics.CATALOGUE) gives it and
reads what its subscribers consume, in their groups; an agency reads its own topic and writes
acks, nothing else. The expectations are worked out here from the code, not from
tipline/access.py, so the test fails when the code and the committed script drift apart; and the
catalogue must say what the services' code does (what they consume, what they declare)."""

import importlib
import os
import shlex
import stat
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from shared import topics
from shared.agencies import load_agencies
from shared.settings import Settings
from shared.signing import ensure_keys
from tests.catalogue import may_write
from tests.deploy.conftest import ROOT, SIGNERS

SCRIPT = ROOT / "deploy/kafka/access.sh"
Grant = tuple[str, str, str, str, str]  # permission, operation, resource, name, pattern


def parse(script: str) -> tuple[list[str], dict[str, set[Grant]]]:
    """The `user` and `acl` lines of the script: principals, and each one's grants."""
    users, grants = [], defaultdict(set)
    for line in script.splitlines():
        if not line.startswith(("user ", "acl ", "if ")):
            continue
        words = shlex.split(line.replace(";", " "))
        if words[:1] == ["user"]:
            users.append(words[1])
        elif words[:1] == ["if"] and "user" in words:
            users.append(words[words.index("user") + 1])
        elif words[:1] == ["acl"]:
            args = words[1:]
            flag = next(a for a in args if a.endswith("-principal"))
            permission = flag.removeprefix("--").removesuffix("-principal")
            principal = args[args.index(flag) + 1].removeprefix("User:")
            operation = args[args.index("--operation") + 1]
            pattern = (args[args.index("--resource-pattern-type") + 1]
                       if "--resource-pattern-type" in args else "literal")
            for i, arg in enumerate(args):
                if arg in ("--topic", "--group"):
                    grants[principal].add(
                        (permission, operation, arg[2:], args[i + 1], pattern))
    return users, grants


@pytest.fixture(scope="module")
def script() -> tuple[list[str], dict[str, set[Grant]]]:
    return parse(SCRIPT.read_text())


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each consuming service's broker as the service builds it for Apache Kafka, in
    transactions (nothing connects)."""
    keys = tmp_path_factory.mktemp("keys")
    ensure_keys(keys)
    settings = Settings(kafka_bootstrap_servers="kafka:9092", redis_url="redis://redis:6379/0",
                        tipline_keys_dir=keys, tipline_files_dir=keys / "files",
                        kafka_transactions=True)
    out = {s: importlib.import_module(f"services.{s}.main").create_app(settings).broker
           for s in ("validation", "supplementation", "referral", "retraction")}
    out["intake"] = importlib.import_module("services.intake.main").create_app(
        settings).state.broker  # a FastAPI app: its broker is in its state
    return out


@pytest.fixture(scope="module")
def consumed(brokers: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    """(topic, group) of every subscriber of each service."""
    return {name: {(str(getattr(t, "name", t)), str(s.group_id))
                   for s in broker.subscribers for t in s.topics}
            for name, broker in brokers.items()}


def allowed(grants: set[Grant], operation: str, resource: str) -> set[str]:
    return {g[3] for g in grants if g[:3] == ("allow", operation, resource) and g[4] == "literal"}


@pytest.mark.parametrize("service", [s for s in topics.SERVICES if s != "console"])
def test_each_service_writes_exactly_what_writers_allows_and_reads_what_it_consumes(
    service: str, script: tuple[list[str], dict[str, set[Grant]]],
    consumed: dict[str, set[tuple[str, str]]],
) -> None:
    users, grants = script
    assert service in users
    mine = grants[service]
    writes = {t.name for t in topics.written_by(service) if t.prefix is None}
    assert allowed(mine, "Write", "topic") == writes
    reads = consumed.get(service, set())
    assert allowed(mine, "Read", "topic") == {t for t, _ in reads}
    assert allowed(mine, "Read", "group") == {g for _, g in reads}
    # Notice senders write every agency topic, never the acks; nobody else writes agency topics.
    prefixed = {g for g in mine if g[4] == "prefixed"}
    if service in SIGNERS:
        assert prefixed == {("allow", "Write", "topic", topics.AGENCY_PREFIX, "prefixed")}
        assert ("deny", "Write", "topic", topics.AGENCY_ACKS, "literal") in mine
    else:
        assert not prefixed
    assert {g[1] for g in mine} <= {"Read", "Write"}  # no Create, Alter, Delete, All...


@pytest.mark.parametrize("service", [s for s in topics.SERVICES if s != "console"])
def test_the_catalogue_says_what_each_service_consumes(
    service: str, consumed: dict[str, set[tuple[str, str]]],
) -> None:
    """The catalogue's readers are the services' subscribers (as they run in transactions): a
    subscriber added without its row, or a row left behind by a removed one, fails here."""
    assert {t.name for t in topics.read_by(service)} == {t for t, _ in consumed[service]}


def test_what_services_declare_they_publish_is_allowed(
    brokers: dict[str, Any], script: tuple[list[str], dict[str, set[Grant]]],
) -> None:
    """Every publisher declared on a service's broker names a topic the catalogue lets it
    write, and its ACL lets it: a publisher declared without its row fails here. (What the
    services publish as they run: tests/integration/test_pipeline.py.)"""
    _, grants = script
    for service, broker in brokers.items():
        for publisher in broker.publishers:
            assert may_write(service, publisher.topic), (service, publisher.topic)
            assert publisher.topic in allowed(grants[service], "Write", "topic"), (
                service, publisher.topic)


def test_each_agency_reads_its_own_topic_and_writes_acks_nothing_else(
    script: tuple[list[str], dict[str, set[Grant]]],
) -> None:
    users, grants = script
    agencies = load_agencies(ROOT / "deploy/config/routing.yaml")
    assert agencies
    for agency_id in agencies:
        principal = f"agency-{agency_id}"
        assert principal in users
        assert grants[principal] == {
            ("allow", "Read", "topic", topics.agency_topic(agency_id), "literal"),
            ("allow", "Read", "group", f"agency-{agency_id}", "literal"),
            ("allow", "Write", "topic", topics.AGENCY_ACKS, "literal"),
        }


def test_nobody_but_the_pipeline_and_the_agencies_gets_anything(
    script: tuple[list[str], dict[str, set[Grant]]],
) -> None:
    users, grants = script
    assert set(grants) <= set(users)
    assert "admin" not in grants  # a super user (super.users): no ACL needed, none given
    agencies = {f"agency-{a}" for a in load_agencies(ROOT / "deploy/config/routing.yaml")}
    assert set(users) == {"admin", *topics.SERVICES, *agencies}
    # The console reads, and never the raw (unverified) acknowledgements.
    console = grants["console"]
    assert ("deny", "Read", "topic", topics.AGENCY_ACKS, "literal") in console
    assert not allowed(console, "Write", "topic")  # it counts what it refuses, writes nothing
    assert allowed(console, "Describe", "group") == {"*"}  # lag: committed offsets only
    assert not allowed(console, "Write", "group")


def test_the_script_runs_and_calls_kafkas_tools_as_intended(tmp_path: Path) -> None:
    """Run with stand-ins for kafka-configs.sh and kafka-acls.sh that log their arguments: the
    quoting holds, every password reaches its user, a missing password stops the script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for tool in ("kafka-configs.sh", "kafka-acls.sh"):
        stub = bin_dir / tool
        stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" {tool} "$@" >> "{log}"\n'
                        f'printf "\\n" >> "{log}"\n')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    users, _ = parse(SCRIPT.read_text())
    env = {"PATH": os.environ["PATH"], "KAFKA_HOME": str(tmp_path),
           "TIPLINE_KAFKA_ADMIN_BOOTSTRAP": "kafka:9091",
           "TIPLINE_KAFKA_ADMIN_JAAS": 'PlainLoginModule required username="admin" password="x";',
           **{f"TIPLINE_PASSWORD_{u.upper().replace('-', '_')}": f"pw-{u}" for u in users}}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    calls = [line.split("\0")[:-1] for line in log.read_text().splitlines() if line]
    configs = [c for c in calls if c[0] == "kafka-configs.sh"]
    assert {c[c.index("--entity-name") + 1] for c in configs} == set(users)
    for call in configs:
        user = call[call.index("--entity-name") + 1]
        assert call[call.index("--add-config") + 1] == \
            f"SCRAM-SHA-512=[iterations=8192,password=pw-{user}]"
        assert call[call.index("--bootstrap-server") + 1] == "kafka:9091"
    acl_calls = [c for c in calls if c[0] == "kafka-acls.sh"]
    assert len(acl_calls) == sum(1 for line in SCRIPT.read_text().splitlines()
                                 if line.startswith("acl "))
    assert all("--add" in c for c in acl_calls)
    # Without a principal's password it stops, naming the variable.
    del env["TIPLINE_PASSWORD_REFERRAL"]
    failed = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode != 0 and "TIPLINE_PASSWORD_REFERRAL" in failed.stderr
