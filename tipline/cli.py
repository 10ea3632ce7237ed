"""tipline: run the embedded stack, the demo, and an agency's reference client."""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from shared.settings import Settings

WORKDIR = Path(os.environ.get("TIPLINE_WORKDIR", ".tipline"))


def _print_stack(stack: "Stack") -> None:  # type: ignore[name-defined]  # noqa: F821
    print(f"kafka   {stack.kafka}")
    from tipline.stack import VALKEY_PASSWORD_FILE

    password = getattr(stack, "redis_password", "")
    where = f"; password in {stack.workdir / VALKEY_PASSWORD_FILE}" if password else ""
    print(f"redis   {stack.redis}{where}")
    print(f"intake  {stack.http}  (POST /v1/reports, GET /v1/reports/{{id}})")
    print(f"ispws   {stack.http}/ispws  (ESP reporting API; `tipline esp add NAME` from this "
          "directory finds this stack)")
    if getattr(stack, "analyst", ""):
        print(f"analyst {stack.analyst}/v1/analyst  (HTTP Basic, role analyst)")
    for child in stack.children:
        ops = f"  ops {child.ops}" if child.ops else ""
        print(f"  {child.name:<16} pid {child.process.pid:<8} log {child.log}{ops}")


def cmd_up(args: argparse.Namespace) -> int:
    from tipline.stack import running

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with running(WORKDIR, http_port=args.port) as stack:
        _print_stack(stack)
        from tipline.agencycli import dev_analyst

        if stack.own_valkey:  # never add a development account to a Redis we were given
            print(f"analyst login: {dev_analyst(stack.settings(), WORKDIR)}")
        else:
            print("analyst login: none made (REDIS_URL is yours); add one with "
                  "`TIPLINE_ANALYST_PASSWORD=... tipline analyst add ANALYST_ID`")
        from tipline.status import save_state  # for `tipline status`

        save_state(WORKDIR, stack)
        print("tipline is up; Ctrl-C stops everything.", flush=True)
        while not stop:
            if dead := stack.check():
                print(f"stopped unexpectedly: {', '.join(dead)}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("stopping...", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tipline import demo

    if args.url:
        return demo.main(Settings(), args.url, args.reports, args.seed)
    from tipline.stack import running

    with running(WORKDIR) as stack:
        _print_stack(stack)
        return demo.main(stack.settings(), stack.http, args.reports, args.seed)


def cmd_agency_tail(args: argparse.Namespace) -> int:
    from tipline.agency import AgencyClient

    async def tail() -> None:
        from tipline.agencycli import agency_signer

        client = AgencyClient(Settings(), args.agency_id, group_id=args.group,
                              auto_ack=not args.manual_ack, signer=agency_signer(args.keys))
        await client.start()
        try:
            async for notice in client.notices():
                print(json.dumps(notice.model_dump(mode="json")), flush=True)
        finally:
            await client.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tipline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole system (embedded broker and Valkey by default)")
    up.add_argument("--port", type=int, default=8080, help="intake HTTP port (default 8080)")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser(
        "demo", help="send synthetic reports and retractions, show what agencies got"
    )
    demo.add_argument("--url", help="intake URL of a running stack (default: start one)")
    demo.add_argument("--reports", type=int, default=40)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)

    agency = sub.add_parser("agency", help="the reference agency client")
    agency_sub = agency.add_subparsers(dest="agency_command", required=True)
    tail = agency_sub.add_parser("tail", help="print one agency's notices as they arrive")
    tail.add_argument("agency_id")
    tail.add_argument("--group", help="consumer group (default agency-<id>)")
    tail.add_argument("--manual-ack", action="store_true",
                      help="do not acknowledge; use `tipline agency ack` instead")
    tail.add_argument("--keys", help="the agency's own signing keys directory (signs acks)")
    tail.set_defaults(func=cmd_agency_tail)

    from tipline.agencycli import add_agency_commands  # agency ack, agency outcome
    from tipline.agencycli import add_commands as add_agency_cli  # analyst add, keys rotate

    add_agency_commands(agency_sub)
    add_agency_cli(sub)

    from tipline.loadcli import add_commands  # generate, replay, bench, status

    add_commands(sub)

    from tipline.esps import add_commands as add_esp_commands  # esp add NAME, esp list

    add_esp_commands(sub)

    from tipline.docs import add_commands as add_docs_commands  # docs [--check]

    add_docs_commands(sub)

    from tipline.deadletters import add_commands as add_deadletter_commands  # show, requeue

    add_deadletter_commands(sub)

    from tipline.rewind import add_commands as add_rewind_commands  # rewind GROUP TOPIC

    add_rewind_commands(sub)

    from tipline.credentials import add_commands as add_deploy_commands  # deploy secrets

    add_deploy_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
