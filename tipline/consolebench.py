"""`tipline console-bench`: the console's pages against a read model of N synthetic reports.

It fills the console's read model with synthetic events (every kind the topics carry: drafts
aside), through the same `ReadModel.apply` the console's follower uses, then serves the console's
own HTTP app (uvicorn, loopback) in this process and times every kind of page over HTTP, as a
signed-in analyst: p50, p95 and max per page, and the process's memory (RSS now and its peak).
The process imports what the console service imports, so its memory is the console's. Each
event is made by `record` from its topic, with the model the console reads that topic with (the
console's unit tests make theirs with it too).

`--process` measures the real thing instead: the same events published (sealed and signed) to
an embedded broker of its own, then the console service started as a process, timed until its
read model has caught up, and its memory read from /proc.
"""

import argparse
import asyncio
import json
import random
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from redis.asyncio import Redis

import services.console.main  # noqa: F401  # what the service imports: its memory counts too
from services.console import sessions
from services.console.model import MODELS, ReadModel
from services.console.web import Console, create_api
from services.notification.notices import notice_id
from shared import topics
from shared.agencies import AgencyRegistry
from shared.analysts import AnalystDirectory
from shared.contracts import AgencyNotice, NoticeKind, Priority, Report, Supplement
from shared.kafka import ensure_topics
from shared.seals import Seals
from shared.settings import CONFIG_DIR, Settings
from shared.signing import Signer, ensure_keys
from shared.topics import WRITERS, agency_of_topic
from shared.topology import topic_names
from tipline.stack import Stack, free_port, spawn_valkey, write_valkey_config

ESPS = [f"bench-esp-{i}" for i in range(20)]


def synthetic_events(reports: int, agencies: list[str], seed: int = 14,
                     span_s: float = 3600.0) -> Iterator[tuple[str, BaseModel]]:
    """(topic, event) for `reports` reports spread over the last `span_s` seconds: 10%
    rejected, the rest referred to 1-3 agencies; 15% of those retracted, most corrections
    acknowledged, some re-sent and escalated; outcomes and a few dead letters. Made one
    report at a time, as a follower reads them: the bench never holds them all."""
    rng = random.Random(seed)
    start = time.time() - span_s
    empty = Report()

    def at(t: float) -> datetime:
        return datetime.fromtimestamp(min(t, time.time()), UTC)

    for i in range(reports):
        out: list[tuple[str, BaseModel]] = []
        rid, esp, t = str(10**17 + i * 7919), rng.choice(ESPS), start + i * span_s / reports
        out.append(record(topics.REPORTS_SUBMITTED, event_id=f"s{rid}", report_id=rid,
                          esp_id=esp, report=empty, occurred_at=at(t)))
        if i % 10 == 9:
            out.append(record(topics.REPORTS_REJECTED, event_id=f"j{rid}", report_id=rid,
                              esp_id=esp, occurred_at=at(t + 0.1),
                              reasons=[{"path": "incident_at", "reason": "in the future"}]))
            yield from out
            continue
        chosen = rng.sample(agencies, rng.randint(1, 3))
        out.append(record(topics.REPORTS_VALIDATED, event_id=f"v{rid}", report_id=rid,
                          esp_id=esp, report=empty, occurred_at=at(t + 0.1)))
        supplements = [Supplement(
            supplement_id=f"s{rid}-{i}", kind="note", content="synthetic", source="bench",
            verified=rng.random() < 0.5, analyst_id="a1", added_at=at(t))
            for i in range(rng.randint(0, 2))]
        out.append(record(topics.REPORTS_SUPPLEMENTED, event_id=f"u{rid}", report_id=rid,
                          esp_id=esp, report=empty, agencies=chosen, priority=Priority.NORMAL,
                          jurisdiction="us_state=TX", rules_version="1",
                          supplements=supplements, occurred_at=at(t + 0.2)))
        out.append(record(topics.REPORTS_REFERRED, event_id=f"r{rid}", report_id=rid,
                          agencies=chosen, occurred_at=at(t + 0.3)))
        for agency in chosen:
            out.append(notice("referral", rid, agency, at(t + .3)))
            out.append(ack(rid, agency, None, at(t + 1)))
            if rng.random() < 0.2:
                out.append(record(topics.REPORTS_OUTCOMES, event_id=f"o{rid}{agency}",
                                  report_id=rid, agency_id=agency,
                                  outcome=rng.choice(["received", "investigating", "closed"]),
                                  occurred_at=at(t + 5)))
        if rng.random() < 0.15:
            out += retraction(rng, rid, chosen, at, t + 20)
        yield from out
    for n in range(20):
        yield record(topics.DEAD_LETTERS, service="validation", topic=topics.REPORTS_SUBMITTED,
                     partition=0, offset=n, key=None, value="synthetic",
                     error="ValidationError: synthetic")


def retraction(rng: random.Random, rid: str, chosen: list[str], at: Callable[[float], datetime],
               t: float) -> list[tuple[str, BaseModel]]:
    out = [
        record(topics.RETRACTIONS_REQUESTED, command_id=f"c{rid}", report_id=rid,
               requested_by="esp", actor="bench", reason="synthetic", requested_at=at(t)),
        record(topics.REPORTS_RETRACTED, event_id=f"x{rid}", report_id=rid, requested_by="esp",
               actor="bench", reason="synthetic", corrected_agencies=chosen,
               occurred_at=at(t + 0.1))]
    for agency in chosen:
        out.append(notice("correction", rid, agency, at(t + .1)))
        fate = rng.random()
        if fate < 0.7:
            out.append(ack(rid, agency, "correction", at(t + 1)))
        elif fate < 0.85:
            out.append(resent(rid, agency, "correction", 1, at(t + 300)))
            out.append(escalated(rid, agency, "correction", 3, at(t + 1200)))
    return out


def record(topic: str, /, **fields: Any) -> tuple[str, BaseModel]:
    """(topic, event): the event made of `fields` by the model the console reads `topic` with
    (services.console.model.MODELS; a notice on an agency's topic)."""
    model = AgencyNotice if agency_of_topic(topic) else MODELS[topic]
    return topic, model.model_validate(fields)


def notice(kind: NoticeKind, rid: str, agency: str, issued: datetime,
           **payload: Any) -> tuple[str, BaseModel]:
    return record(topics.agency_topic(agency), kind=kind, notice_id=notice_id(kind, rid, agency),
                  report_id=rid, agency_id=agency, issued_at=issued, payload=payload)


def ack(rid: str, agency: str, kind: NoticeKind | None, when: datetime,
        late: bool = False) -> tuple[str, BaseModel]:
    """An agency's acknowledgement of its referral (`kind` None) or of a later notice."""
    return record(topics.NOTICES_ACKNOWLEDGED, event_id=f"a{rid}{agency}{kind}", report_id=rid,
                  agency_id=agency, notice_id=notice_id(kind or "referral", rid, agency),
                  kind=kind, late=late, occurred_at=when)


def resent(rid: str, agency: str, kind: NoticeKind, n: int,
           when: datetime) -> tuple[str, BaseModel]:
    """The `n`th re-send of an unacknowledged notice."""
    return record(topics.NOTICES_RESENT, event_id=f"re{rid}{agency}{n}", report_id=rid,
                  agency_id=agency, notice_id=notice_id(kind, rid, agency), kind=kind,
                  resend=n, occurred_at=when)


def escalated(rid: str, agency: str, kind: NoticeKind, resends: int,
              when: datetime) -> tuple[str, BaseModel]:
    """A notice escalated after `resends` re-sends went unacknowledged."""
    return record(topics.NOTICES_ESCALATED, event_id=f"es{rid}{agency}", report_id=rid,
                  agency_id=agency, notice_id=notice_id(kind, rid, agency), kind=kind,
                  resends=resends, occurred_at=when)


def rss_mb() -> tuple[float, float]:
    """(resident now, peak resident) of this process, in MB: both from /proc (getrusage's peak
    is updated lazily and can read below the current RSS)."""
    kb = {name: int(value.split()[0]) for name, _, value in (
        line.partition(":") for line in Path("/proc/self/status").read_text().splitlines())
        if name in ("VmRSS", "VmHWM")}
    return round(kb["VmRSS"] / 1024, 1), round(kb["VmHWM"] / 1024, 1)


async def run(reports: int, requests: int, seed: int) -> dict[str, Any]:
    registry = AgencyRegistry(CONFIG_DIR / "routing.yaml")
    agencies = sorted(registry.agencies)
    model = ReadModel(ack_timeout_s=300)
    memory_empty = rss_mb()
    started = time.process_time()
    for topic, event in synthetic_events(reports, agencies, seed):
        model.apply(topic, event)
    applied_s = time.process_time() - started  # CPU: making the events, then applying them
    model.caught_up = True
    memory_filled = rss_mb()
    secret = b"b" * 32
    # Sessions are checked in Redis at every request (sign-outs, password changes): a Valkey of
    # the bench's own, with the bench's analyst in its directory.
    valkey = Stack(kafka="", redis="", http="", workdir=Path(tempfile.mkdtemp(prefix="bench-")))
    write_valkey_config(valkey, "valkey", free_port())
    redis = Redis(port=spawn_valkey(valkey, "valkey"), decode_responses=True)
    directory = AnalystDirectory(redis)
    await directory.add("bench", "synthetic-bench-password")
    signed_in = sessions.Sessions(redis, directory, secret, 3600)
    api = create_api(Console(model, registry, directory, signed_in))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port,
                                           log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    rng = random.Random(seed)
    ids = model.order
    cookie = {sessions.COOKIE: await signed_in.open("bench", "analyst", time.time())}
    pages: dict[str, Callable[[], str]] = {
        "overview": lambda: "/",
        "overview page n": lambda: f"/?page={rng.randint(2, max(2, len(ids) // 25))}",
        "report": lambda: f"/reports/{rng.choice(ids)}",
        "agency": lambda: f"/agencies/{rng.choice(agencies)}",
        "agency page n": lambda: f"/agencies/{rng.choice(agencies)}?page={rng.randint(1, 5)}",
        "agencies": lambda: "/agencies",
        "search id": lambda: f"/search?q={rng.choice(ids)[:12]}",
        "search ESP": lambda: f"/search?esp={rng.choice(ESPS)}&page={rng.randint(1, 10)}",
        "live fragment": lambda: "/",
        "live version": lambda: "/live/version",
    }
    timings: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", cookies=cookie,
                                     timeout=30) as http:
            for name, path in pages.items():
                headers = {"X-Console-Fragment": "1"} if name == "live fragment" else {}
                spent, used = timings[name], cpu[name] = [], []
                for _ in range(requests):
                    t0, c0 = time.perf_counter(), time.process_time()
                    answer = await http.get(path(), headers=headers)
                    spent.append((time.perf_counter() - t0) * 1000)
                    used.append((time.process_time() - c0) * 1000)
                    if answer.status_code != 200:
                        raise RuntimeError(f"{path()}: {answer.status_code}")
    finally:
        server.should_exit = True
        await serving
        await redis.aclose()
        valkey.stop()
        shutil.rmtree(valkey.workdir, ignore_errors=True)
    memory_served = rss_mb()

    def pct(values: list[float], q: int) -> float:
        return round(statistics.quantiles(values, n=100)[q - 1], 2) if len(values) > 1 else 0.0

    return {
        "reports": reports, "records": model.events, "apply_cpu_s": round(applied_s, 2),
        "records_per_cpu_s": round(model.events / applied_s),
        "rss_mb_empty": memory_empty[0], "rss_mb_filled": memory_filled[0],
        "rss_mb_after_pages": memory_served[0], "rss_mb_peak": memory_served[1],
        "pages": {n: {"p50_ms": pct(v, 50), "p95_ms": pct(v, 95), "max_ms": round(max(v), 2),
                      "cpu_p50_ms": pct(cpu[n], 50), "cpu_p95_ms": pct(cpu[n], 95),
                      "requests": len(v)} for n, v in timings.items()},
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"console read model: {result['reports']} reports, {result['records']} records "
             f"made and applied in {result['apply_cpu_s']} CPU s "
             f"({result['records_per_cpu_s']}/CPU s)",
             f"memory: RSS {result['rss_mb_empty']} MB empty (the service's imports), "
             f"{result['rss_mb_filled']} MB filled, {result['rss_mb_after_pages']} MB after "
             f"the pages, peak {result['rss_mb_peak']} MB",
             "", "wall time per request over loopback HTTP, and this process's CPU time for it "
             "(server and client; the CPU figure holds on a busy machine)",
             f"{'page':<16} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'CPU p50':>8} "
             f"{'CPU p95':>8} {'requests':>9}"]
    for name, row in result["pages"].items():
        lines.append(f"{name:<16} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8} "
                     f"{row['cpu_p50_ms']:>8} {row['cpu_p95_ms']:>8} {row['requests']:>9}")
    return "\n".join(lines)


def cmd_console_bench(args: argparse.Namespace) -> int:
    if args.process:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
            measured = run_process(args.reports, args.seed, Path(tmp))
        print(f"console service process: {measured['records']} records of "
              f"{measured['reports']} reports published in {measured['published_s']} s; "
              f"read model rebuilt {measured['rebuilt_s']} s after the process started; "
              f"RSS {measured['rss_mb']} MB, peak {measured['rss_mb_peak']} MB")
        if args.json:
            Path(args.json).write_text(json.dumps(measured, indent=2))
        return 1 if measured["rss_mb_peak"] >= args.memory_mb else 0
    result = asyncio.run(run(args.reports, args.requests, args.seed))
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    slow = [n for n, row in result["pages"].items() if row["p95_ms"] >= args.budget_ms]
    if slow or result["rss_mb_peak"] >= args.memory_mb:
        print(f"over budget: pages {slow}, peak RSS {result['rss_mb_peak']} MB "
              f"(budgets {args.budget_ms} ms, {args.memory_mb} MB)")
        return 1
    return 0


def run_process(reports: int, seed: int, workdir: Path) -> dict[str, Any]:
    """The console service as a process, rebuilding from `reports` reports on a broker."""
    import os
    import subprocess
    import sys

    from tipline.stack import Stack, start_servers

    keys = workdir / "keys"
    ensure_keys(keys)
    stack = Stack(kafka="", redis="redis://127.0.0.1:1/0", http="", workdir=workdir)
    given = os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    try:
        if given:
            stack.kafka = given
        else:
            start_servers(stack, redis_logins=False)  # a broker of its own (and Valkey)
        agencies = sorted(AgencyRegistry(CONFIG_DIR / "routing.yaml").agencies)
        started = time.perf_counter()
        records = asyncio.run(publish(stack.kafka, keys, reports, agencies, seed))
        published_s = time.perf_counter() - started
        ops = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka, "TIPLINE_KEYS_DIR": str(keys),
               "TIPLINE_CONSOLE_SESSION_SECRET": secrets.token_urlsafe(32),
               "TIPLINE_CONSOLE_PORT": str(free_port()), "TIPLINE_OPS_PORT": str(ops),
               "REDIS_URL": stack.redis}
        started = time.perf_counter()
        with (workdir / "console.log").open("ab") as log:
            console = subprocess.Popen([sys.executable, "-m", "services.console"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT)
        try:
            while not _rebuilt(f"http://127.0.0.1:{ops}/readyz"):
                if console.poll() is not None or time.perf_counter() - started > 600:
                    raise RuntimeError(f"the console did not catch up: see {workdir}/console.log")
                time.sleep(0.2)
            rebuilt_s = time.perf_counter() - started
            time.sleep(5)  # settled
            status = dict(line.split(":", 1) for line in
                          Path(f"/proc/{console.pid}/status").read_text().splitlines())
        finally:
            console.terminate()
            console.wait(30)
    finally:
        stack.stop()
        if given:
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = given
    return {"reports": reports, "records": records, "published_s": round(published_s, 1),
            "rebuilt_s": round(rebuilt_s, 1),
            "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
            "rss_mb_peak": round(int(status["VmHWM"].split()[0]) / 1024, 1)}


def _rebuilt(readyz: str) -> bool:
    try:
        return bool(httpx.get(readyz, timeout=2).json()["checks"].get("read model") == "ok")
    except (httpx.HTTPError, ValueError, KeyError):
        return False


async def publish(kafka: str, keys: Path, reports: int, agencies: list[str], seed: int) -> int:
    """The synthetic events on their topics, as the services write them: sealed by a writer of
    the topic, notices signed."""
    await ensure_topics(Settings(kafka_bootstrap_servers=kafka), topic_names(agencies))
    seals, signer = Seals(keys), Signer(keys)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    count, sent = 0, []
    try:
        for topic, event in synthetic_events(reports, agencies, seed):
            key = str(getattr(event, "report_id", None) or "bench").encode()
            if isinstance(event, AgencyNotice):
                value = json.dumps(signer.sign(event.model_dump(mode="json"))).encode()
                headers = []
            else:
                value = event.model_dump_json().encode()
                writer = min(WRITERS[topic]) if topic != topics.DEAD_LETTERS else "validation"
                headers = seals.headers(writer, topic, key, value)
            sent.append(await producer.send(topic, value, key=key, headers=headers))
            count += 1
            if len(sent) >= 2000:
                await asyncio.gather(*sent)
                sent = []
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return count


def add_commands(sub: Any) -> None:
    bench = sub.add_parser("console-bench", help="time every console page against a read "
                           "model of N synthetic reports; p50/p95 and memory")
    bench.add_argument("--reports", type=int, default=10_000)
    bench.add_argument("--requests", type=int, default=100, help="requests per kind of page")
    bench.add_argument("--seed", type=int, default=14)
    bench.add_argument("--budget-ms", type=float, default=200.0, help="p95 budget per page")
    bench.add_argument("--memory-mb", type=float, default=150.0, help="peak RSS budget")
    bench.add_argument("--json", help="also write the figures to this file")
    bench.add_argument("--process", action="store_true", help="instead: the console service "
                       "as a process rebuilding from the events on an embedded broker (or "
                       "KAFKA_BOOTSTRAP_SERVERS): time to catch up, and its memory")
    bench.set_defaults(func=cmd_console_bench)
