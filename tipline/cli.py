"""tipline: run the embedded stack, the demo, and an agency's reference client."""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

WORKDIR = Path(os.environ.get("TIPLINE_WORKDIR", ".tipline"))


def _print_stack(stack: "Stack") -> None:  # type: ignore[name-defined]  # noqa: F821
    from tipline.credentials import PASSWORDS_FILE
    from tipline.stack import SECRETS_DIR

    nodes = sum(c.name.startswith("kafka-") for c in stack.children)
    if nodes:
        from tipline import kafkajars

        print(f"kafka   {stack.kafka}  (Apache Kafka {kafkajars.version()}, {nodes} node(s), "
              f"SASL_SSL SCRAM-SHA-512, CA {stack.kafka_env['KAFKA_SSL_CA_FILE']}; each service "
              f"logs in as itself, tools as the admin; passwords in "
              f"{stack.workdir / SECRETS_DIR / PASSWORDS_FILE})")
    else:
        print(f"kafka   {stack.kafka}")

    user = getattr(stack, "redis_username", "")
    where = (f"  (ACL users: each service its own, tools `{user}`; passwords in "
             f"{stack.workdir / SECRETS_DIR / PASSWORDS_FILE})" if user else "")
    shards = sum(c.name.startswith("valkey-") for c in stack.children)
    cluster = f"  (a Redis Cluster of {shards} shards)" if shards else ""
    print(f"redis   {stack.redis}{where}{cluster}")
    print(f"ispws   {stack.http}/ispws  (the CyberTipline-compatible ESP API, HTTP Basic)")
    print(f"intake  {stack.http}/v1/reports  (the JSON ESP API, the same ESP logins)")
    print(f"public  {stack.http}/report  (the public form: anyone, no login; analysts triage "
          "each report)")
    if getattr(stack, "analyst", ""):
        print(f"analyst {stack.analyst}/v1/analyst  (HTTP Basic, role analyst)")
    if getattr(stack, "console", ""):
        print(f"console {stack.console}/  (the web console: analyst or operator login)")
    for child in stack.children:
        ops = f"  ops {child.ops}" if child.ops else ""
        print(f"  {child.name:<16} pid {child.process.pid:<8} log {child.log}{ops}")


def cmd_up(args: argparse.Namespace) -> int:
    from tipline.kafkajars import Unavailable

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return _up(args, lambda: stop)
    except Unavailable as exc:  # no Java, no Maven; a workdir of another shape
        print(f"tipline up: {exc}", file=sys.stderr)
        return 2


def _up(args: argparse.Namespace, stopping: Callable[[], bool]) -> int:
    from tipline.stack import running

    with running(WORKDIR, http_port=args.port, redis_shards=args.redis_cluster,
                 kafka=args.kafka, brokers=args.brokers) as stack:
        _print_stack(stack)
        from tipline.agencycli import dev_analyst

        settings = stack.settings()
        if stack.own_valkey:  # development logins on the stack's own Valkey only, never on a
            # Redis it was given (REDIS_URL)
            login = dev_analyst(settings, WORKDIR)
            print(f"analyst login: {login}")
            print(f"console login: {login}, at {stack.console}/login")
            from tipline.demo import ESP
            from tipline.esps import LOGINS_FILE, dev_logins

            asyncio.run(dev_logins(settings, [ESP], WORKDIR))
            print(f"ESP login:     {ESP} (password in {WORKDIR / LOGINS_FILE}; "
                  "tipline esp add NAME for more)")
        else:
            print("analyst login: none made (REDIS_URL is yours); add one with "
                  "`TIPLINE_ANALYST_PASSWORD=... tipline analyst add ANALYST_ID [--role "
                  "operator]`; it opens the console too")
        from tipline.status import save_state  # for `tipline status`

        save_state(WORKDIR, stack)
        print("tipline is up; Ctrl-C stops everything.", flush=True)
        while not stopping():
            if dead := stack.check():
                print(f"stopped unexpectedly: {', '.join(dead)}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("stopping...", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tipline import demo
    from tipline.esps import dev_logins

    if args.url:
        return _demo_against(args)
    from tipline.stack import running

    with running(WORKDIR, kafka=args.kafka, brokers=args.brokers) as stack:
        _print_stack(stack)
        settings = stack.settings()
        login = asyncio.run(dev_logins(settings, [demo.ESP], WORKDIR))
        return demo.main(settings, stack.http, (demo.ESP, login[demo.ESP]), args.reports,
                         args.seed, workdir=WORKDIR, console=stack.console or None,
                         lasting=False)


def _demo_against(args: argparse.Namespace) -> int:
    """The demo against a running stack: its broker and Redis from the environment, or from
    `tipline up`'s workdir."""
    from tipline import demo
    from tipline.esps import dev_logins
    from tipline.status import load_state, tool_settings

    settings, state = tool_settings(WORKDIR), load_state(WORKDIR) or {}
    if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or state.get("kafka")):
        print("tipline demo: agencies follow their topics on the stack's broker, and no broker "
              "is known: set KAFKA_BOOTSTRAP_SERVERS (tipline up prints it), or run the demo "
              f"where `tipline up` keeps its workdir ({WORKDIR}).", file=sys.stderr)
        return 2
    if args.esp:
        name, _, password = args.esp.partition(":")
        login = (name, password)
    elif os.environ.get("REDIS_URL") or state.get("redis"):
        login = (demo.ESP, asyncio.run(dev_logins(settings, [demo.ESP], WORKDIR))[demo.ESP])
    else:
        print("tipline demo: give the ESP login with --esp NAME:PASSWORD "
              "(tipline esp add NAME makes one)", file=sys.stderr)
        return 2
    return demo.main(settings, args.url, login, args.reports, args.seed, workdir=WORKDIR,
                     console=state.get("console"))


def cmd_agency_tail(args: argparse.Namespace) -> int:
    from tipline.agency import AgencyClient

    async def tail() -> None:
        from tipline.agencycli import agency_settings, agency_signer

        data = Path(args.data) if args.data else WORKDIR / "agency" / args.agency_id
        client = AgencyClient(agency_settings(args.agency_id), args.agency_id,
                              group_id=args.group, auto_ack=not args.manual_ack,
                              signer=agency_signer(args.agency_id, args.keys), data_dir=data)
        await client.start()
        try:
            async for notice in client.notices():
                print(json.dumps(notice.model_dump(mode="json")), flush=True)
        finally:
            await client.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail())
    return 0


def _broker_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--kafka", choices=("embedded", "apache"), default="embedded",
                         help="the broker it starts: the embedded one (memory only, no Java), or "
                         "Apache Kafka (KRaft, SASL_SSL, ACLs; data kept in the workdir; its "
                         "jars fetched once through Maven, `make kafka`)")
    command.add_argument("--brokers", type=int, default=1, choices=(1, 2, 3),
                         help="Apache Kafka nodes (default 1; 3: replication factor 3, "
                         "min.insync.replicas 2)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tipline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole system (embedded broker and Valkey by default)")
    up.add_argument("--port", type=int, default=8080, help="intake HTTP port (default 8080)")
    up.add_argument("--redis-cluster", type=int, default=1, metavar="SHARDS",
                    help="its own Valkey as a Redis Cluster of this many primaries (default: one "
                    "plain Valkey); ignored when REDIS_URL is set")
    _broker_options(up)
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser(
        "demo", help="send synthetic reports and retractions, show what agencies got"
    )
    demo.add_argument("--url", help="intake URL of a running stack (default: start one)")
    demo.add_argument("--esp", help="the ESP login NAME:PASSWORD (default: a development ESP "
                      "registered on `tipline up`'s stack)")
    demo.add_argument("--reports", type=int, default=40)
    demo.add_argument("--seed", type=int, default=7)
    _broker_options(demo)
    demo.set_defaults(func=cmd_demo)

    agency = sub.add_parser("agency", help="the reference agency client")
    agency_sub = agency.add_subparsers(dest="agency_command", required=True)
    tail = agency_sub.add_parser("tail", help="print one agency's notices as they arrive")
    tail.add_argument("agency_id")
    tail.add_argument("--group", help="consumer group (default agency-<id>)")
    tail.add_argument("--manual-ack", action="store_true",
                      help="do not acknowledge; use `tipline agency ack` instead")
    tail.add_argument("--keys", help="the agency's own signing keys directory (signs acks; "
                      "default: the one `tipline up` made for it in its workdir)")
    tail.add_argument("--data", help="where the client keeps the notices it took, across "
                      "restarts (default: <workdir>/agency/<id>)")
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

    from tipline.kafkajars import add_commands as add_kafka_commands  # kafka fetch

    add_kafka_commands(sub)

    from tipline.deadletters import add_commands as add_deadletter_commands  # show, requeue

    add_deadletter_commands(sub)

    from tipline.rewind import add_commands as add_rewind_commands  # rewind GROUP TOPIC

    add_rewind_commands(sub)

    from tipline.idle import add_commands as add_idle_commands  # idle

    add_idle_commands(sub)

    from tipline.consolebench import add_commands as add_console_commands  # console-bench

    add_console_commands(sub)

    from tipline.credentials import add_commands as add_deploy_commands  # deploy secrets

    add_deploy_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
