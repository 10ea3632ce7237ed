"""What a stack costs with nothing flowing: `tipline idle` starts the whole system as `tipline up`
does, waits until every service is ready and has settled, then reads the CPU time of each process
(with its own child processes) over a window, and prints each one's share of a core and the total.

Issue #28's budget is under 10% of one core for an idle stack in all its processes together.
"""

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from tipline.bench import all_ready, cpu_seconds
from tipline.stack import running


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (a broker's JVM under its launcher, say)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo.extend(parents.get(out[-1], []))
    return out


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(pid))


def measure(workdir: Path, kafka: Literal["embedded", "apache"], seconds: float,
            settle_s: float) -> dict[str, Any]:
    """Each process's share of one core over `seconds` of nothing flowing, and the total."""
    with running(workdir, kafka=kafka) as stack:
        asyncio.run(all_ready(stack, timeout=120))
        time.sleep(settle_s)  # group joins and start-up work done before the window opens
        before = {c.name: tree_cpu_seconds(c.process.pid) for c in stack.children}
        started = time.monotonic()
        time.sleep(seconds)
        after = {c.name: tree_cpu_seconds(c.process.pid) for c in stack.children}
        took = time.monotonic() - started
    shares = {name: round((after[name] - before[name]) / took, 4) for name in before}
    return {"broker": kafka, "seconds": round(took, 1), "settle_s": settle_s,
            "share_of_a_core": shares, "total": round(sum(shares.values()), 4),
            "load_average": os.getloadavg()}


def render(r: dict[str, Any]) -> str:
    rows = sorted(r["share_of_a_core"].items(), key=lambda kv: -kv[1])
    return "\n".join([
        f"idle stack on the {r['broker']} broker, {r['seconds']} s after {r['settle_s']} s "
        "settling: share of one core",
        *(f"  {name:<22} {share:>7.1%}" for name, share in rows),
        f"  {'total':<22} {r['total']:>7.1%}   (budget under 10%)",
        f"load average at the end: {', '.join(f'{x:.2f}' for x in r['load_average'])} "
        "(other work on the machine skews this)"])


def cmd_idle(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tipline-idle-") as tmp:
        result = measure(Path(tmp), args.kafka, args.seconds, args.settle)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def add_commands(sub: Any) -> None:
    idle = sub.add_parser("idle", help="what an idle stack costs: each process's share of a core")
    idle.add_argument("--kafka", choices=("embedded", "apache"), default="embedded")
    idle.add_argument("--seconds", type=float, default=60.0, help="the window (default 60)")
    idle.add_argument("--settle", type=float, default=15.0,
                      help="seconds after every service is ready before the window opens")
    idle.add_argument("--json", help="also write the figures as JSON to this file")
    idle.set_defaults(func=cmd_idle)
