"""docker-compose.yml holds its trust boundaries: nothing internal on every host interface, each
service's Kafka and Redis login from its own env file (never a literal here), each service's own
key files and no other (the notice-signing key only where notices are sent), Kafka with SASL and
ACLs only, and ops endpoints on their own port."""

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import topics
from shared.keysets import ALL, HELD, lay_out
from shared.seals import SEAL_FILE, Seals
from shared.signing import SIGNING_FILE, rotate
from tests.deploy.conftest import ROOT, SERVICES, SIGNERS, settings_env_names
from tipline import credentials
from tipline.access import REDIS_DEFAULT, routing_agencies

COMPOSE = ROOT / "docker-compose.yml"
SECRETS_DIR = "${TIPLINE_SECRETS_DIR:-./.tipline/secrets}/"
KEYS_DIR = "/var/lib/tipline/keys"  # TIPLINE_KEYS_DIR of the images
SECRET_NAMES = ("KAFKA_SASL_PASSWORD", "REDIS_PASSWORD", "KAFKA_SASL_USERNAME",
                "REDIS_USERNAME", "JAAS", "PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What `tipline deploy secrets` writes (relative path -> content), in a scratch folder."""
    out = tmp_path_factory.mktemp("secrets")
    written = credentials.write_all(out)
    return {str(p.relative_to(out)): p.read_text() for p in written}


def env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines()
             if line and not line.startswith("#"))
    return {k: v.strip("'") for k, v in pairs}


def test_nothing_but_the_esp_port_is_published_on_every_interface(
    compose: dict[str, Any],
) -> None:
    published = []
    for name, service in compose["services"].items():
        for entry in service.get("ports", []):
            spec = entry if isinstance(entry, str) else \
                f"{entry.get('host_ip', '')}:{entry['published']}:{entry['target']}"
            published.append((name, spec))
            if (name, spec) == ("intake", "8080:8080"):
                continue  # the ESP API: ESPs must reach it
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} on every interface"
    assert ("intake", "8080:8080") in published


def test_each_service_gets_its_logins_from_its_own_env_file(
    compose: dict[str, Any], generated: dict[str, str],
) -> None:
    text = COMPOSE.read_text()
    for name in SERVICES:
        service = compose["services"][name]
        assert service["env_file"] == f"{SECRETS_DIR}compose/{name}.env", name
        literal = set(service["environment"])
        assert not {k for k in literal if k.endswith(SECRET_NAMES)}, name
        env = env_file(generated[f"compose/{name}.env"])
        assert env["KAFKA_SASL_USERNAME"] == name and env["REDIS_USERNAME"] == name
        assert env["KAFKA_SASL_PASSWORD"] and env["REDIS_PASSWORD"]
        assert env["KAFKA_SASL_PASSWORD"] not in text
        assert set(env) <= settings_env_names(), name
        assert service["environment"]["KAFKA_SECURITY_PROTOCOL"].startswith("SASL_")
    # No password, hash or JAAS secret is written into the compose file itself.
    assert not re.search(r'password="|requirepass|user_admin=', text)


def test_every_file_compose_reads_is_one_the_generator_writes(
    compose: dict[str, Any], generated: dict[str, str],
) -> None:
    named = [s["env_file"] for s in compose["services"].values() if "env_file" in s]
    named += [s["file"] for s in compose.get("secrets", {}).values()]
    assert named
    for path in named:
        assert path.startswith(SECRETS_DIR), path
        assert path.removeprefix(SECRETS_DIR) in generated, path
    # Compose's default folder is where `tipline deploy secrets` writes by default.
    with pytest.MonkeyPatch.context() as env:
        env.delenv("TIPLINE_WORKDIR", raising=False)
        default = str(credentials.default_dir())
    assert SECRETS_DIR.removeprefix("${TIPLINE_SECRETS_DIR:-./").removesuffix("}/") == default


def test_kafka_listens_with_sasl_only_and_enforces_acls(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}
    listeners = {p.split("://")[0] for p in kafka["KAFKA_LISTENERS"].split(",")}
    assert listeners == set(protocols)
    for listener in ("INTERNAL", "HOST"):  # where services and host tools connect
        assert kafka[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"] == \
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:admin"
    # The services reach the SCRAM listener, under their own principal, after the ACL one-shot.
    assert compose["x-tipline-env"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    access = compose["services"]["kafka-access"]
    assert access["command"] == ["bash", "/etc/tipline/kafka/access.sh"]
    assert "./deploy/kafka:/etc/tipline/kafka:ro" in access["volumes"]
    for name in SERVICES:
        needs = compose["services"][name]["depends_on"]
        assert needs["kafka-access"]["condition"] == "service_completed_successfully"


def test_the_broker_and_access_files_carry_the_admin_login(generated: dict[str, str]) -> None:
    kafka = env_file(generated["compose/kafka.env"])
    for listener in ("BROKER", "CONTROLLER"):
        jaas = kafka[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        assert 'username="admin"' in jaas and "user_admin=" in jaas and jaas.endswith(";")
    access = env_file(generated["compose/kafka-access.env"])
    agencies = routing_agencies()
    expected = {"ADMIN", *(s.upper() for s in topics.SERVICES),
                *(f"AGENCY_{a.upper().replace('-', '_')}" for a in agencies)}
    assert {k.removeprefix("TIPLINE_PASSWORD_") for k in access
            if k.startswith("TIPLINE_PASSWORD_")} == expected
    for agency_id in agencies:
        handed = env_file(generated[f"agencies/{agency_id}.env"])
        assert handed["KAFKA_SASL_USERNAME"] == f"agency-{agency_id}"
        assert handed["KAFKA_SASL_PASSWORD"] == \
            access[f"TIPLINE_PASSWORD_AGENCY_{agency_id.upper().replace('-', '_')}"]


def test_redis_requires_an_acl_user(compose: dict[str, Any], generated: dict[str, str]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--aclfile") + 1] == "/run/secrets/redis_acl"
    assert redis["secrets"] == ["redis_acl"]
    acl = generated["redis.acl"]
    assert REDIS_DEFAULT in acl.splitlines() and " off " in REDIS_DEFAULT  # no login, nothing
    users = {line.split()[1] for line in acl.splitlines()}
    assert users == {"default", *topics.SERVICES, "operator"}
    assert not re.search(r" >", acl)  # hashes (#...), never a cleartext password (>...)


def test_intake_ops_endpoints_are_on_their_own_port(compose: dict[str, Any]) -> None:
    intake = compose["services"]["intake"]
    assert intake["environment"]["TIPLINE_OPS_PORT"] == "9464"
    assert "9464/healthz" in " ".join(intake["healthcheck"]["test"])
    assert not any("9464" in str(p) for p in intake["ports"])  # not published at all
    collector = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    targets = collector["receivers"]["prometheus"]["config"]["scrape_configs"][0][
        "static_configs"][0]["targets"]
    assert "intake:9464" in targets and "intake:8080" not in targets


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """A service's volumes as the long syntax has them (`src:target[:ro]` read into fields)."""
    out = []
    for mount in service.get("volumes", []):
        if isinstance(mount, str):
            source, target, *mode = mount.split(":")
            mount = {"source": source, "target": target, "read_only": mode == ["ro"]}
        out.append(mount)
    return out


def test_each_service_mounts_its_own_keys_and_no_others(compose: dict[str, Any]) -> None:
    assert set(HELD) == set(SERVICES) == set(topics.SERVICES)
    for name in SERVICES:
        keys = [m for m in mounts(compose["services"][name]) if m["source"] == "keys"]
        assert keys == [{"type": "volume", "source": "keys", "target": KEYS_DIR,
                         "read_only": True, "volume": {"subpath": name}}], (
            f"{name} must mount its own folder of the keys volume, read-only, and nothing else "
            f"of it: {keys}")
    # The whole volume (every key, the private signing key too) only in the one-shot making it.
    whole = [name for name, service in compose["services"].items() for m in mounts(service)
             if m["source"] == "keys" and not m.get("volume", {}).get("subpath")]
    assert whole == ["keys"]
    assert compose["services"]["keys"]["command"] == ["python", "-m", "shared.keysets", KEYS_DIR]


def folder(path: Path) -> dict[str, Any]:
    return {name: json.loads((path / name).read_text()) for name in sorted(os.listdir(path))}


def test_the_keys_one_shot_gives_each_service_only_the_files_it_holds(tmp_path: Path) -> None:
    """What the `keys` one-shot (python -m shared.keysets) leaves in the volume, folder by folder:
    each service's mount shows it exactly its files."""
    lay_out(tmp_path)
    every = folder(tmp_path / ALL)
    for name in SERVICES:
        assert folder(tmp_path / name) == {n: every[n] for n in HELD[name]}, name
        assert (SIGNING_FILE in folder(tmp_path / name)) == (name in SIGNERS), name
    # The volume's top holds no key: a Compose that ignored the subpath would give a service no
    # seal key, so it would refuse to start rather than run holding every key.
    assert all((tmp_path / n).is_dir() for n in os.listdir(tmp_path))
    with pytest.raises(FileNotFoundError):
        Seals(tmp_path)
    # After a rotation the one-shot runs again: the senders' copies follow, nothing else changes.
    rotate(tmp_path / ALL)
    lay_out(tmp_path)
    assert folder(tmp_path / "referral")[SIGNING_FILE] == folder(tmp_path / ALL)[SIGNING_FILE]
    assert folder(tmp_path / "referral")[SIGNING_FILE] != every[SIGNING_FILE]
    assert folder(tmp_path / "intake") == {SEAL_FILE: every[SEAL_FILE]}


def test_a_keys_volume_from_before_the_folders_keeps_its_keys(tmp_path: Path) -> None:
    from shared.signing import ensure_keys

    active = ensure_keys(tmp_path)  # what the one-shot used to make, at the volume's top
    before = folder(tmp_path)
    assert lay_out(tmp_path) == active  # the same signing key: agencies still verify
    assert folder(tmp_path / ALL) == before
    assert folder(tmp_path / "console") == {n: before[n] for n in HELD["console"]}
