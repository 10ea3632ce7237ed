"""Command line for agencies, analysts and signing keys:

    tipline agency ack <agency_id> <report_id> <notice_id> [--keys DIR]
    tipline agency keys <agency_id> --dir DIR   (the agency's own key for signing its responses)
    tipline agency outcome <agency_id> <report_id> <received|investigating|closed|unfounded|note>
    tipline analyst add <analyst_id> [--role operator]  (password: env or stdin)
    tipline keys rotate [--overlap-hours 168]
(`tipline agency tail <agency_id> [--manual-ack]` lives in tipline/cli.py.)
"""

import argparse
import asyncio
import json
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

from shared.contracts import Outcome
from shared.settings import Settings


def agency_settings(agency_id: str | None = None) -> Settings:
    """Settings for the agency commands: the environment's, and where it says nothing, the
    broker and routing file of the stack `tipline up` runs in TIPLINE_WORKDIR; on its Apache
    Kafka, an agency's command logs in as that agency, as the agency would."""
    from tipline.access import agency_principal
    from tipline.status import tool_settings

    workdir = Path(os.environ.get("TIPLINE_WORKDIR", ".tipline"))
    if agency_id is None:
        return tool_settings(workdir)
    return tool_settings(workdir, principal=agency_principal(agency_id))


def agency_signer(agency_id: str, keys: str | None) -> Any:
    """The agency's own signer for acks and outcomes: --keys DIR, or the development key `tipline
    up` made for it in its workdir (tipline/agencykeys.py), or None."""
    from shared.signing import SIGNING_FILE, Signer

    if keys:
        return Signer(Path(keys))
    made = Path(os.environ.get("TIPLINE_WORKDIR", ".tipline")) / "agency-keys" / agency_id
    return Signer(made) if (made / SIGNING_FILE).exists() else None


def _respond(agency_id: str, keys: str | None, send: Any) -> int:
    from tipline.agency import AgencyClient

    async def run() -> None:
        client = AgencyClient(agency_settings(agency_id), agency_id,
                              signer=agency_signer(agency_id, keys))
        async with client.sending_only():
            await send(client)

    asyncio.run(run())
    return 0


def cmd_agency_ack(args: argparse.Namespace) -> int:
    return _respond(args.agency_id, args.keys,
                    lambda c: c.acknowledge(args.report_id, args.notice_id))


def cmd_agency_outcome(args: argparse.Namespace) -> int:
    return _respond(args.agency_id, args.keys,
                    lambda c: c.outcome(args.report_id, args.outcome, args.text))


async def _add_analyst(settings: Settings, analyst_id: str, password: str,
                       role: str = "analyst") -> None:
    from shared.analysts import AnalystDirectory
    from shared.store import connect

    redis = connect(settings)
    try:
        await AnalystDirectory(redis).add(analyst_id, password, role)
    finally:
        await redis.aclose()


def cmd_analyst_add(args: argparse.Namespace) -> int:
    password = os.environ.get("TIPLINE_ANALYST_PASSWORD") or sys.stdin.readline().strip()
    try:
        from tipline.status import tool_settings  # REDIS_URL, or `tipline up`'s Valkey

        workdir = Path(os.environ.get("TIPLINE_WORKDIR", ".tipline"))
        asyncio.run(_add_analyst(tool_settings(workdir), args.analyst_id, password, args.role))
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{args.role} {args.analyst_id} added")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from shared.signing import rotate

    keys = Settings().tipline_keys_dir
    done = rotate(keys, overlap=timedelta(hours=args.overlap_hours))
    print(f"active key {done.active} in {keys}")
    if done.retiring:
        print(f"key {done.retiring} still verifies until {done.not_after}")
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from shared.signing import ensure_keys

    keys = Settings().tipline_keys_dir
    print(f"active key {ensure_keys(keys)} in {keys}; every service has a seal key")
    return 0


def cmd_agency_keys(args: argparse.Namespace) -> int:
    from tipline.agencykeys import make_key, register

    keys = Path(args.dir)
    done, public = make_key(keys, timedelta(hours=args.overlap_hours))
    print(f"agency {args.agency_id}: active key {done.active} in {keys} (keep it private)")
    routing = Path(args.routing) if args.routing else Settings().tipline_routing_file
    if args.no_register:
        print(f"not registered: set verify_keys of {args.agency_id} in {routing} to "
              f"{json.dumps(public)}")
        return 0
    try:
        register(routing, args.agency_id, public)
    except LookupError as exc:
        print(f"tipline agency keys: {exc}", file=sys.stderr)
        return 2
    print(f"registered in {routing}: {len(public)} key(s); the services read it within "
          "TIPLINE_ROUTING_RELOAD_S (deploy the file where they read it: `tipline docs` "
          "regenerates the k8s ConfigMap)")
    return 0


def cmd_agency_list(args: argparse.Namespace) -> int:
    from shared.agencies import load_agencies

    routing = agency_settings().tipline_routing_file
    print(f"agencies of {routing}")
    for agency in load_agencies(routing).values():
        acks = (f"{len(agency.verify_keys)} key(s)" if agency.verify_keys
                else "UNABLE TO ACK: no registered key (tipline agency keys)")
        print(f"{agency.id:<20} {acks:<60} {agency.name}")
    return 0


ANALYST_FILE = "analyst-credentials"  # the development analyst's "id:password" (mode 0600)


def dev_analyst(settings: Settings, workdir: Path) -> str:
    """A development analyst for `tipline up`, its password in the workdir (mode 0600)."""
    path = workdir / ANALYST_FILE
    if path.exists():
        analyst_id, password = path.read_text().split(":", 1)
    else:
        analyst_id, password = "dev-analyst", secrets.token_urlsafe(18)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{analyst_id}:{password}")
    asyncio.run(_add_analyst(settings, analyst_id, password.strip()))
    return f"{analyst_id} (password in {path})"


def add_agency_commands(agency_sub: Any) -> None:
    ack = agency_sub.add_parser("ack", help="acknowledge one notice")
    ack.add_argument("agency_id")
    ack.add_argument("report_id")
    ack.add_argument("notice_id")
    ack.set_defaults(func=cmd_agency_ack)
    outcome = agency_sub.add_parser("outcome", help="tell tipline what became of a referral")
    outcome.add_argument("agency_id")
    outcome.add_argument("report_id")
    outcome.add_argument("outcome", choices=get_args(Outcome))
    outcome.add_argument("--text", help="free text (no more than 3000 characters)")
    outcome.set_defaults(func=cmd_agency_outcome)
    for command in (ack, outcome):
        command.add_argument("--keys", help="the agency's own signing keys directory")
    keys = agency_sub.add_parser(
        "keys", help="make or rotate an agency's response-signing key and register it")
    keys.add_argument("agency_id")
    keys.add_argument("--dir", required=True, help="where the agency keeps its keys")
    keys.add_argument("--overlap-hours", type=float, default=168.0)
    keys.add_argument("--routing", help="the routing file (default: TIPLINE_ROUTING_FILE)")
    keys.add_argument("--no-register", action="store_true",
                      help="only print the public keys to register")
    keys.set_defaults(func=cmd_agency_keys)
    listing = agency_sub.add_parser("list", help="the agencies, and which of them can ack")
    listing.set_defaults(func=cmd_agency_list)


def add_commands(sub: Any) -> None:
    analyst = sub.add_parser("analyst", help="analyst accounts for the analyst API")
    analyst_sub = analyst.add_subparsers(dest="analyst_command", required=True)
    add = analyst_sub.add_parser("add", help="add an analyst (password: env or stdin)")
    add.add_argument("analyst_id")
    add.add_argument("--role", choices=("analyst", "operator"), default="analyst",
                     help="operator: reads the console and case files, changes nothing")
    add.set_defaults(func=cmd_analyst_add)

    keys = sub.add_parser("keys", help="notice-signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    init = keys_sub.add_parser("init", help="make the keys a deployment lacks (signing, seals)")
    init.set_defaults(func=cmd_keys_init)
    rotate = keys_sub.add_parser("rotate", help="make a new active key; keep the old for a while")
    rotate.add_argument("--overlap-hours", type=float, default=168.0)
    rotate.set_defaults(func=cmd_keys_rotate)
