"""The load, speed and health subcommands: generate, replay, bench, status.

Kept apart from tipline/cli.py so the heavy imports happen only when a command runs.
"""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

WORKDIR = Path(os.environ.get("TIPLINE_WORKDIR", ".tipline"))


def _write_json(result: dict[str, Any], where: str | None) -> None:
    if where == "-":
        print(json.dumps(result))
    elif where:
        Path(where).write_text(json.dumps(result, indent=2) + "\n")


def cmd_generate(args: argparse.Namespace) -> int:
    from tipline import generate

    stream = generate.events(args.reports, seed=args.seed, rate=args.rate, esps=args.esps)
    if args.out == "-":
        count = generate.write(sys.stdout, stream, args.seed)
    else:
        with open(args.out, "w") as out:
            count = generate.write(out, stream, args.seed)
        print(f"wrote {count} events to {args.out}", file=sys.stderr)
    return 0


def _analyst(args: argparse.Namespace) -> tuple[str, str] | None:
    """--analyst NAME:PASSWORD, else the development analyst `tipline up` made in the workdir."""
    if args.analyst:
        name, _, password = args.analyst.partition(":")
        return name, password
    from tipline.agencycli import ANALYST_FILE

    path = WORKDIR / ANALYST_FILE
    if path.exists():
        name, _, password = path.read_text().strip().partition(":")
        return name, password
    return None


def cmd_replay(args: argparse.Namespace) -> int:
    from tipline import generate, replay
    from tipline.status import load_state, tool_settings

    try:
        _, stream = generate.read(Path(args.file))
    except ValueError as exc:
        print(f"tipline replay: {exc}", file=sys.stderr)
        return 2
    settings = tool_settings(WORKDIR)
    esps = sorted({e["esp_id"] for e in stream if e.get("actor") == "esp"})
    if args.logins:
        logins = json.loads(Path(args.logins).read_text())
    else:  # a development stack: ESPs registered on it, their logins kept in the workdir
        from tipline.esps import dev_logins

        logins = asyncio.run(dev_logins(settings, esps, WORKDIR))
    analyst_url = args.analyst_url or (load_state(WORKDIR) or {}).get("analyst") or None
    try:
        result = asyncio.run(replay.replay(
            settings, args.url, stream, logins, rate=args.rate, duration=args.duration,
            concurrency=args.concurrency, progress=not args.quiet and sys.stderr.isatty(),
            settle_timeout=args.settle, analyst=_analyst(args), analyst_url=analyst_url,
        ))
    except ValueError as exc:
        print(f"tipline replay: {exc}", file=sys.stderr)
        return 2
    if args.json != "-":
        print(replay.render(result))
    _write_json(result, args.json)
    return 0 if replay.clean(result) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    import tipline.bench as bench

    if args.fetch_wait_ms is not None:  # the services read it from the environment
        os.environ["KAFKA_FETCH_MAX_WAIT_MS"] = str(args.fetch_wait_ms)
    result = bench.main(WORKDIR / "bench", quick=args.quick, long_replay_s=args.long_replay,
                        profile=args.profile, offered=args.offered, copies=args.copies,
                        kafka=args.kafka)
    if args.json != "-":
        print(bench.render(result))
    _write_json(result, args.json)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import tipline.status as status

    return status.main(WORKDIR, as_json=args.json, kafka=args.kafka)


def _rate(text: str) -> str:
    if text in ("recorded", "max"):
        return text
    if float(text) <= 0:
        raise argparse.ArgumentTypeError("a rate is a positive number, 'recorded' or 'max'")
    return text


def add_commands(sub: Any) -> None:
    gen = sub.add_parser("generate", help="write a synthetic event stream (JSONL) to replay")
    gen.add_argument("--reports", type=int, default=1000)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--rate", type=float, default=100.0, help="recorded pace, reports a second")
    gen.add_argument("--esps", type=int, default=3)
    gen.add_argument("--out", "-o", default="-", help="file (default: stdout)")
    gen.set_defaults(func=cmd_generate)

    rep = sub.add_parser("replay", help="replay an event stream against a running stack")
    rep.add_argument("file")
    rep.add_argument("--url", default="http://127.0.0.1:8080", help="intake URL")
    rep.add_argument("--logins", help="a JSON file of each ESP's password, {esp: password} "
                     "(default: development ESPs registered on `tipline up`'s stack)")
    rep.add_argument("--rate", type=_rate, default="100",
                     help="actions a second, 'recorded' (the stream's pace) or 'max'")
    rep.add_argument("--duration", type=float, help="seconds; the stream repeats to fill them")
    rep.add_argument("--analyst", metavar="NAME:PASSWORD",
                     help="an analyst login, to play amend actions (default: the development "
                          "analyst `tipline up` made)")
    rep.add_argument("--analyst-url", help="the analyst API (default: `tipline up`'s)")
    rep.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    rep.add_argument("--settle", type=float, default=60.0, help="seconds to wait for quiet")
    rep.add_argument("--json", help="also write the report as JSON to this file ('-': stdout)")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.set_defaults(func=cmd_replay)

    ben = sub.add_parser("bench", help="raw aiokafka relay chain vs the pipeline, on one broker")
    ben.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    ben.add_argument("--long-replay", type=float, default=0.0,
                     help="seconds of steady load to watch memory over (default: skip)")
    ben.add_argument("--profile", action="store_true", help="py-spy each service (needs py-spy)")
    ben.add_argument("--fetch-wait-ms", type=int,
                     help="consumers' fetch_max_wait_ms for this run (default: the setting, 10)")
    ben.add_argument("--copies", type=int, default=1,
                     help="also measure the pipeline's throughput with 2..N copies of each "
                          "consuming service (topics get 8 partitions)")
    ben.add_argument("--offered", type=float,
                     help="reports/s for the latency stages (default: 500)")
    ben.add_argument("--kafka", choices=("embedded", "apache"), default="embedded",
                     help="the broker: a fresh embedded one for each chain (default), or one "
                          "Apache Kafka (as `tipline up --kafka apache` runs it) for both")
    ben.add_argument("--json", help="also write the results as JSON to this file ('-': stdout)")
    ben.set_defaults(func=cmd_bench)

    st = sub.add_parser("status", help="the running stack at a glance: health and consumer lag")
    st.add_argument("--json", action="store_true")
    st.add_argument("--kafka", help="bootstrap servers (default: the stack `tipline up` started)")
    st.set_defaults(func=cmd_status)
