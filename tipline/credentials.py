"""`tipline deploy secrets [--out DIR]`: every credential a deployment needs, made once.

Random passwords for each Kafka principal (each service, each agency in the routing file, the
`admin` super user) and each Redis ACL user (each service and `operator`), and the console's
session-signing secret, are kept in DIR/passwords.json (mode 0600); running it again adds what
is missing (a new agency) and changes nothing else, and `--rotate NAME` makes a new password for
one principal (`--rotate console-session` signs every console user out). From them it writes:

- DIR/compose/*.env: one env file per container that needs a secret (docker-compose.yml names
  them): each service's Kafka user and Redis user, the broker's JAAS settings, the `kafka-access`
  one-shot's passwords, the `topics` one-shot's admin login, and operator.env for tools on the host;
- DIR/redis.acl: the Redis ACL users, with SHA-256 hashes of their passwords only (mode 0644:
  the redis container reads it under its own uid);
- DIR/agencies/<id>.env: what to hand each agency (its Kafka user and password);
- DIR/k8s/secrets.yaml: the same as Kubernetes Secrets (with the signing and seal keys of
  DIR/keys), to `kubectl apply -f` instead of deploy/k8s/secrets.yaml's placeholders.

With no DIR argument, `tipline docs` renders the placeholder Secrets committed in deploy/k8s.
"""

import argparse
import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from shared import topics
from shared.seals import SEAL_FILE
from tipline.access import (
    ADMIN,
    MECHANISM,
    REDIS_OPERATOR,
    REDIS_RULES,
    agency_principal,
    password_variable,
    redis_acl,
    routing_agencies,
)

PLACEHOLDER = "REPLACE_ME"
PASSWORDS_FILE = "passwords.json"
CONSOLE_SESSION = "console-session"  # TIPLINE_CONSOLE_SESSION_SECRET, in the console's files
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


def kafka_principals(agency_ids: Iterable[str]) -> list[str]:
    return [ADMIN, *topics.SERVICES, *(agency_principal(a) for a in agency_ids)]


def ensure_passwords(
    directory: Path, agency_ids: Iterable[str], rotate: Iterable[str] = (),
) -> dict[str, dict[str, str]]:
    """{"kafka": {principal: password}, "redis": {user: password}, "secrets": {name: value}},
    kept in the directory."""
    path = directory / PASSWORDS_FILE
    data: dict[str, dict[str, str]] = (json.loads(path.read_text()) if path.exists()
                                       else {"kafka": {}, "redis": {}})
    data.setdefault("secrets", {})  # a file from before the console
    rotate = set(rotate)
    wanted = {"kafka": kafka_principals(agency_ids), "redis": list(REDIS_RULES),
              "secrets": [CONSOLE_SESSION]}
    unknown = rotate - {n for names in wanted.values() for n in names}
    if unknown:
        raise ValueError(f"no such principal or user: {', '.join(sorted(unknown))}")
    for kind, names in wanted.items():
        for name in names:
            if name in rotate or not data[kind].get(name):
                data[kind][name] = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: no quoting needed
    _write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o600)
    return data


def _env(comment: str, values: Mapping[str, str]) -> str:
    # Single quotes: compose's env_file and a shell's `.` both take the value literally.
    lines = [f"# {comment}", "# Written by `tipline deploy secrets`; keep it private."]
    lines += [f"{k}='{v}'" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _plain_jaas(password: str, server: bool) -> str:
    users = f' user_{ADMIN}="{password}"' if server else ""
    return f'{PLAIN} required username="{ADMIN}" password="{password}"{users};'


def _credentials(user: str, kafka: str, redis: str | None) -> dict[str, str]:
    values = {"KAFKA_SASL_MECHANISM": MECHANISM, "KAFKA_SASL_USERNAME": user,
              "KAFKA_SASL_PASSWORD": kafka}
    if redis is not None:
        values |= {"REDIS_USERNAME": user, "REDIS_PASSWORD": redis}
    return values


def compose_files(passwords: Mapping[str, Mapping[str, str]],
                  agency_ids: Iterable[str]) -> dict[str, str]:
    """Relative path -> content of every file docker compose reads secrets from."""
    kafka, redis = passwords["kafka"], passwords["redis"]
    admin = kafka[ADMIN]
    files = {
        "compose/kafka.env": _env(
            "The broker's SASL/PLAIN logins: the admin, on the BROKER and CONTROLLER listeners.", {
                "KAFKA_LISTENER_NAME_BROKER_PLAIN_SASL_JAAS_CONFIG": _plain_jaas(admin, True),
                "KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG": _plain_jaas(admin, True),
                "TIPLINE_KAFKA_ADMIN_JAAS": _plain_jaas(admin, False),
            }),
        "compose/kafka-access.env": _env(
            "The kafka-access one-shot: the admin's login and every principal's password.", {
                "TIPLINE_KAFKA_ADMIN_JAAS": _plain_jaas(admin, False),
                **{password_variable(p): kafka[p] for p in kafka_principals(agency_ids)},
            }),
        "compose/admin.env": _env("The topics one-shot: the Kafka admin (SCRAM).",
                                  _credentials(ADMIN, admin, None)),
        "compose/operator.env": _env(
            "Tools on the host (tipline esp add, analyst add, deadletters, status, demo): "
            "`set -a; . THIS_FILE; set +a`.", {
                "KAFKA_BOOTSTRAP_SERVERS": "localhost:9094",
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                **_credentials(ADMIN, admin, None),
                "KAFKA_SESSION_TIMEOUT_MS": "10000", "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                "REDIS_URL": "redis://localhost:6379/0",
                "REDIS_USERNAME": REDIS_OPERATOR, "REDIS_PASSWORD": redis[REDIS_OPERATOR],
            }),
        "redis.acl": redis_acl(redis),
    }
    for service in topics.SERVICES:
        files[f"compose/{service}.env"] = _env(
            f"{service}: its Kafka principal and Redis user.",
            _credentials(service, kafka[service], redis[service])
            | _own_secrets(service, passwords["secrets"][CONSOLE_SESSION]))
    for agency_id in agency_ids:
        principal = agency_principal(agency_id)
        files[f"agencies/{agency_id}.env"] = _env(
            f"Agency {agency_id}: hand this to the agency (reads tipline.agency.{agency_id} in "
            f"group agency-{agency_id}, writes tipline.agency.acks; nothing else).",
            _credentials(principal, kafka[principal], None))
    return files


def _own_secrets(service: str, session: str) -> dict[str, str]:
    """What a service holds besides its logins: the console signs its sessions."""
    return {"TIPLINE_CONSOLE_SESSION_SECRET": session} if service == "console" else {}


def _secret(name: str, data: Mapping[str, str], comment: str = "") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "tipline",
                         "labels": {"app.kubernetes.io/part-of": "tipline"}},
            "type": "Opaque", "stringData": dict(data), "__comment": comment}


def k8s_secrets(
    passwords: Mapping[str, Mapping[str, str]] | None = None,
    agency_ids: Iterable[str] = (),
    keys_dir: Path | None = None,
) -> str:
    """The Secrets the manifests use: real values, or placeholders when `passwords` is None."""
    agency_ids = list(agency_ids)

    def kafka(principal: str) -> str:
        return passwords["kafka"][principal] if passwords else PLACEHOLDER

    def redis(user: str) -> str:
        return passwords["redis"][user] if passwords else PLACEHOLDER

    session = passwords["secrets"][CONSOLE_SESSION] if passwords else PLACEHOLDER

    def key_file(name: str, placeholder: str) -> str:
        return (keys_dir / name).read_text() if keys_dir else placeholder

    docs = [
        *(_secret(f"tipline-{s}-credentials",
                  _credentials(s, kafka(s), redis(s)) | _own_secrets(s, session),
                  f"{s}: its Kafka principal (SCRAM) and Redis ACL user." if i == 0 else "")
          for i, s in enumerate(topics.SERVICES)),
        _secret("tipline-admin-credentials", _credentials(ADMIN, kafka(ADMIN), None),
                "The Kafka admin (a super user of your cluster), for the tipline-topics Job."),
        _secret("tipline-kafka-access", {
            "TIPLINE_KAFKA_ADMIN_JAAS":
                f'{SCRAM} required username="{ADMIN}" password="{kafka(ADMIN)}";',
            **{password_variable(p): kafka(p) for p in kafka_principals(agency_ids)
               if p != ADMIN},
        }, "The tipline-kafka-access Job: the admin's login and every principal's password\n"
           "(agencies from deploy/config/routing.yaml; `tipline docs` adds a new one)."),
        _secret("tipline-signing-keys", {
            "signing-keys.json": key_file("signing-keys.json",
                                          f'{{"active": "{PLACEHOLDER}", "keys": {{}}}}'),
            "public-keys.json": key_file("public-keys.json", '{"keys": []}'),
        }, "Notice signing (Ed25519): referral and retraction (the notice senders) mount it and\n"
           "re-read it when it changes, so a rotation is a `kubectl apply`, no restart."),
        _secret("tipline-seal-keys", {
            SEAL_FILE: key_file(SEAL_FILE, f'{{"keys": {{}}, "note": "{PLACEHOLDER}"}}'),
        }, "Seal keys (HMAC, one per service): every service mounts it, to seal what it\n"
           "writes and check the seals of what it reads (shared/seals.py)."),
    ]
    if not passwords:
        docs += [
            _secret("tipline-tls-ca", {"ca.crt": PLACEHOLDER},
                    "The CA that signed your Kafka brokers' and Redis's certificates (PEM)."),
            _secret("tipline-esp-credentials", {"ESP_ID": PLACEHOLDER,
                                                "ESP_PASSWORD": PLACEHOLDER},
                    "ESP logins: `tipline esp add NAME` registers an ESP in Redis (a salted\n"
                    "hash) and prints its password once, to hand to the ESP. Keep it in your\n"
                    "secret store, not in git."),
            _secret("tipline-analyst-credentials", {"ANALYST_ID": PLACEHOLDER,
                                                    "TIPLINE_ANALYST_PASSWORD": PLACEHOLDER},
                    "Analyst logins: `TIPLINE_ANALYST_PASSWORD=... tipline analyst add ID`\n"
                    "stores a salted scrypt hash in Redis."),
        ]
    out = []
    for doc in docs:
        comment = doc.pop("__comment")
        text = "".join(f"# {line}\n" for line in comment.splitlines())
        out.append(text + yaml.safe_dump(doc, sort_keys=False, width=1000))
    return "---\n".join(out)


PLACEHOLDER_HEADER = """\
# Generated from the code by `tipline docs`: do not edit by hand.
# PLACEHOLDERS. Never commit real values. `tipline deploy secrets --out DIR` writes these
# Secrets with random passwords (and the signing and seal keys) to DIR/k8s/secrets.yaml:
# `kubectl apply -f` that file and drop this one from the kustomization, or create them from
# your secret store. docs/operations.md, "Trust model", says who holds what.
"""


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, mode)  # an existing file keeps its old mode through os.open


def write_all(directory: Path, routing: Path | None = None,
              rotate: Iterable[str] = ()) -> list[Path]:
    from shared.signing import ensure_keys

    agency_ids = routing_agencies(routing) if routing else routing_agencies()
    passwords = ensure_passwords(directory, agency_ids, rotate)
    ensure_keys(directory / "keys")  # kept: running again never rotates the signing keys
    written = []
    for relative, text in compose_files(passwords, agency_ids).items():
        mode = 0o644 if relative == "redis.acl" else 0o600
        _write(directory / relative, text, mode)
        written.append(directory / relative)
    k8s = directory / "k8s" / "secrets.yaml"
    _write(k8s, k8s_secrets(passwords, agency_ids, directory / "keys"), 0o600)
    return [*written, k8s]


def cmd_secrets(args: argparse.Namespace) -> int:
    directory = Path(args.out)
    try:
        written = write_all(directory, Path(args.routing) if args.routing else None, args.rotate)
    except ValueError as exc:
        print(f"tipline deploy secrets: {exc}", file=sys.stderr)
        return 2
    print(f"credentials in {directory} ({len(written)} files; passwords kept in "
          f"{directory / PASSWORDS_FILE}):")
    print(f"  docker compose: TIPLINE_SECRETS_DIR={directory} docker compose up --build")
    print(f"  kubernetes:     kubectl apply -f {directory / 'k8s/secrets.yaml'}  (and "
          "`kubectl -n tipline create secret generic tipline-tls-ca --from-file=ca.crt`)")
    print(f"  agencies:       {directory / 'agencies'}/<id>.env, one per agency")
    print(f"  host tools:     set -a; . {directory / 'compose/operator.env'}; set +a")
    return 0


def default_dir() -> Path:
    """Where docker-compose.yml looks unless TIPLINE_SECRETS_DIR says otherwise."""
    return Path(os.environ.get("TIPLINE_WORKDIR", ".tipline")) / "secrets"


def add_commands(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="deployment helpers")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    make = deploy_sub.add_parser(
        "secrets", help="make (once) every Kafka and Redis credential, as compose env files and "
        "Kubernetes Secrets")
    make.add_argument("--out", default=str(default_dir()),
                      help="where to write them (default .tipline/secrets, where "
                      "docker-compose.yml looks)")
    make.add_argument("--routing", help="the routing file naming the agencies "
                      "(default deploy/config/routing.yaml)")
    make.add_argument("--rotate", nargs="*", default=[], metavar="NAME",
                      help="make new passwords for these principals, or `console-session` "
                      "(then re-run the access one-shot and restart them)")
    make.set_defaults(func=cmd_secrets)
