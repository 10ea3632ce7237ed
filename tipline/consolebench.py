"""`tipline console-bench`: the console service against a store of N synthetic reports.

It fills a console store (services/console/store.py) with synthetic events of N reports (every
kind the topics carry: drafts aside), through the same `Store.apply` the console's follower
uses, puts a tail of more reports' events (sealed and signed) on an embedded broker of its own,
then starts the console service as a process on that store: it times the start (the tail read
from the broker, past the checkpoint), every kind of page over HTTP as a signed-in analyst (p50,
p95, max), reads the process's memory from /proc, and times a restart from the checkpoint until
the console serves again. Each event is made by `record` from its topic, with the model the
console reads that topic with (the console's unit tests make theirs with it too).

`--process` measures a rebuild instead: every event published to the broker, and the console
service started on an empty store, timed until it has read them all.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from redis.asyncio import Redis

from services.console import sessions
from services.console.follow import BATCH
from services.console.model import MODELS
from services.console.store import Read, Store
from services.notification.notices import notice_id
from shared import topics
from shared.agencies import AgencyRegistry
from shared.analysts import AnalystDirectory
from shared.contracts import AgencyNotice, AgencyResponse, NoticeKind, Priority, Report, Supplement
from shared.kafka import ensure_topics
from shared.seals import Seals
from shared.settings import CONFIG_DIR, Settings
from shared.signing import Signer, ensure_keys
from shared.topics import WRITERS, agency_of_topic
from shared.topology import topic_names
from tipline.stack import free_port

PRIORITIES = list(Priority)

ESPS = [f"bench-esp-{i}" for i in range(20)]


def report_ids(reports: int, first: int = 0) -> list[str]:
    """The ids `synthetic_events` gives its reports (time-ordered, as tipline's are)."""
    return [str(10**17 + i * 7919) for i in range(first, first + reports)]


def synthetic_events(reports: int, agencies: list[str], seed: int = 14,
                     span_s: float = 3600.0, first: int = 0) -> Iterator[tuple[str, BaseModel]]:
    """(topic, event) for `reports` reports (from the `first`th) spread over the last `span_s`
    seconds: 10% rejected, the rest referred to 1-3 agencies at every priority, 2% of those
    referrals never acknowledged; 15% retracted, most corrections acknowledged, some re-sent
    and escalated, some still waiting; outcomes; the last agency's acks refused now and then
    (its dead letters), and a few other dead letters. Made one report at a time, as a follower
    reads them: the bench never holds them all."""
    rng = random.Random(seed + first)
    start = time.time() - span_s
    empty = Report()

    def at(t: float) -> datetime:
        return datetime.fromtimestamp(min(t, time.time()), UTC)

    for i, rid in enumerate(report_ids(reports, first)):
        out: list[tuple[str, BaseModel]] = []
        esp, t = rng.choice(ESPS), start + i * span_s / reports
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
        priority = rng.choice(PRIORITIES)
        out.append(record(topics.REPORTS_SUPPLEMENTED, event_id=f"u{rid}", report_id=rid,
                          esp_id=esp, report=empty, agencies=chosen, priority=priority,
                          jurisdiction="us_state=TX", rules_version="1",
                          supplements=supplements, occurred_at=at(t + 0.2)))
        out.append(record(topics.REPORTS_REFERRED, event_id=f"r{rid}", report_id=rid,
                          agencies=chosen, priority=priority, occurred_at=at(t + 0.3)))
        for agency in chosen:
            out.append(notice("referral", rid, agency, at(t + .3)))
            if rng.random() < 0.98:
                out.append(ack(rid, agency, None, at(t + 1)))
            if rng.random() < 0.2:
                out.append(record(topics.REPORTS_OUTCOMES, event_id=f"o{rid}{agency}",
                                  report_id=rid, agency_id=agency,
                                  outcome=rng.choice(["received", "investigating", "closed"]),
                                  occurred_at=at(t + 5)))
        if rng.random() < 0.15:
            out += retraction(rng, rid, chosen, at, t + 20)
        if i % 1000 == 500:
            out.append(refused_ack(rid, agencies[-1], at(t + 2), first + i))
        yield from out
    for n in range(20 if not first else 0):
        yield record(topics.DEAD_LETTERS, service="validation", topic=topics.REPORTS_SUBMITTED,
                     partition=0, offset=n, key=None, value="synthetic",
                     error="ValidationError: synthetic", failed_at=at(start + span_s))


def refused_ack(rid: str, agency: str, when: datetime, n: int) -> tuple[str, BaseModel]:
    """The retraction service's dead letter of an ack signed by a key the agency never
    registered."""
    response = AgencyResponse(response_id=f"bench-{n}", agency_id=agency, report_id=rid,
                              kind="ack", notice_id=notice_id("referral", rid, agency),
                              text=None, key_id="bench-unregistered", signature="synthetic")
    return record(topics.DEAD_LETTERS, service="retraction", topic=topics.AGENCY_ACKS,
                  partition=0, offset=n, key=rid, value=response.model_dump_json(),
                  error=f"Poison: response from {agency} refused: unknown key bench-unregistered",
                  failed_at=when)


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
        elif fate < 0.9:
            out.append(resent(rid, agency, "correction", 1, at(t + 300)))
    return out


def record(topic: str, /, **fields: Any) -> tuple[str, BaseModel]:
    """(topic, event): the event made of `fields` by the model the console reads `topic` with
    (services.console.model.MODELS; a notice on an agency's topic)."""
    model = AgencyNotice if agency_of_topic(topic) else MODELS[topic]
    return topic, model.model_validate(fields)


def notice(kind: NoticeKind, rid: str, agency: str, issued: datetime) -> tuple[str, BaseModel]:
    """A synthetic referral, correction or first amendment, with the least payload of its
    kind."""
    referral = notice_id("referral", rid, agency)
    payloads: dict[str, dict[str, Any]] = {
        "referral": {"esp_id": "bench", "report": {}, "jurisdiction": "synthetic",
                     "rules_version": "bench"},
        "correction": {"corrects_notice_id": referral, "reason": "synthetic",
                       "requested_by": "esp", "retracted_at": issued.isoformat()},
        "amendment": {"version": 1, "amends_notice_id": referral},
    }
    return record(topics.agency_topic(agency), kind=kind, notice_id=notice_id(kind, rid, agency),
                  report_id=rid, agency_id=agency, issued_at=issued, payload=payloads[kind])


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


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(resident now, peak resident) of a process, in MB, from /proc (getrusage's peak is
    updated lazily and can read below the current RSS)."""
    kb = {name: int(value.split()[0]) for name, _, value in (
        line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        if name in ("VmRSS", "VmHWM")}
    return round(kb["VmRSS"] / 1024, 1), round(kb["VmHWM"] / 1024, 1)


def fill(data_dir: Path, reports: int, agencies: list[str], seed: int) -> dict[str, Any]:
    """A console store of `reports` synthetic reports, through `Store.apply` in the follower's
    batches; its figures."""
    store = Store(data_dir)
    started, cpu = time.perf_counter(), time.process_time()
    records, batch = 0, []
    try:
        for topic, event in synthetic_events(reports, agencies, seed):
            batch.append(Read(topic, 0, records, event))
            records += 1
            if len(batch) >= BATCH:
                store.apply(batch, {})
                batch = []
        store.apply(batch, {})
        store.tune()
    finally:
        store.close()
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = sum(p.stat().st_size for p in data_dir.iterdir() if p.is_file())
    return {"reports": reports, "records": records, "fill_s": round(took, 1),
            "fill_cpu_s": round(cpu, 1), "records_per_cpu_s": round(records / max(cpu, 1e-9)),
            "store_mb": round(size / 1e6, 1)}


def paths(ids: list[str], agencies: list[str], rng: random.Random,
          tail: list[str]) -> dict[str, Callable[[], str]]:
    """Every kind of page, a URL each time."""
    deep = max(2, len(ids) // 25)
    filters = ["state=retracted&esp={esp}", "agency={agency}&priority=high",
               "correction=escalated", "correction=overdue&agency={agency}", "last=15m",
               "state=referred&sort=priority", "esp={esp}&sort=priority&order=asc",
               "priority=imminent&last=1h", "agency={agency}&state=retracted&sort=priority"]

    def filtered() -> str:
        chosen = rng.choice(filters).format(esp=rng.choice(ESPS), agency=rng.choice(agencies))
        return f"/?{chosen}&page={rng.randint(2, 20)}"  # (a page past the last shows the last)

    return {
        "overview": lambda: "/",
        "overview page n": lambda: f"/?page={rng.randint(2, deep)}",
        "overview filtered": filtered,
        "attention page n": lambda: f"/?attention={rng.randint(2, 400)}",
        "report": lambda: f"/reports/{rng.choice(ids)}",
        "report (tail)": lambda: f"/reports/{rng.choice(tail)}",
        "agency": lambda: f"/agencies/{rng.choice(agencies)}",
        "agency page n": lambda: (f"/agencies/{rng.choice(agencies)}?pending="
                                  f"{rng.randint(1, 40)}&page={rng.randint(1, 400)}"),
        "agencies": lambda: "/agencies",
        "search id": lambda: f"/search?q={rng.choice(ids)[:12]}",
        "search ESP": lambda: f"/search?esp=bench-esp-1&page={rng.randint(1, 400)}",
        "dead letters": lambda: f"/deadletters?page={rng.randint(1, 3)}",
        "triage": lambda: "/triage",
        "delivery export": lambda: f"/reports/{rng.choice(ids)}/delivery.csv",
        "live fragment": lambda: "/",
        "live version": lambda: "/live/version",
    }


def time_pages(base: str, cookie: dict[str, str], kinds: dict[str, Callable[[], str]],
               requests: int) -> dict[str, dict[str, float]]:
    out = {}
    with httpx.Client(base_url=base, cookies=cookie, timeout=60) as http:
        for name, path in kinds.items():
            headers = {"X-Console-Fragment": "1"} if name == "live fragment" else {}
            spent = []
            for _ in range(requests):
                url = path()
                t0 = time.perf_counter()
                answer = http.get(url, headers=headers)
                spent.append((time.perf_counter() - t0) * 1000)
                if answer.status_code != 200:
                    raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:200]}")
            out[name] = {"p50_ms": pct(spent, 50), "p95_ms": pct(spent, 95),
                         "max_ms": round(max(spent), 2), "requests": len(spent)}
    return out


def pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 2) if len(values) > 1 else (
        round(values[0], 2) if values else 0.0)


def run(reports: int, requests: int, seed: int, workdir: Path, tail: int = 1000,
        agencies_file: Path = CONFIG_DIR / "routing.yaml") -> dict[str, Any]:
    """The store filled, the tail on the broker; the console service started on them, its pages
    timed, its memory read, then restarted from its checkpoint."""
    agencies = sorted(AgencyRegistry(agencies_file).agencies)
    data_dir = workdir / "console"
    result = fill(data_dir, reports, agencies, seed)
    keys = workdir / "keys"
    ensure_keys(keys)
    with own_servers(workdir) as stack:
        result["tail_records"] = asyncio.run(publish(stack.kafka, keys, tail, agencies, seed,
                                                     first=reports))
        secret = secrets.token_urlsafe(32)
        port, ops = free_port(), free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
               "TIPLINE_KEYS_DIR": str(keys), "TIPLINE_CONSOLE_SESSION_SECRET": secret,
               "TIPLINE_CONSOLE_PORT": str(port), "TIPLINE_OPS_PORT": str(ops),
               "TIPLINE_CONSOLE_DATA_DIR": str(data_dir), "REDIS_URL": stack.redis,
               "TIPLINE_ROUTING_FILE": str(agencies_file)}
        base = f"http://127.0.0.1:{port}"
        cookie = {sessions.COOKIE: asyncio.run(sign_in(stack.redis, secret.encode()))}
        console, result["start_s"] = start_console(env, workdir, base, ops, cookie)
        try:
            result["rss_mb_started"] = rss_mb(console.pid)[0]
            rng = random.Random(seed)
            ids = report_ids(reports)
            kinds = paths(ids, agencies, rng, report_ids(tail, reports))
            result["pages"] = time_pages(base, cookie, kinds, requests)
            result["rss_mb"], result["rss_mb_peak"] = rss_mb(console.pid)
        finally:
            stop(console)
        console, result["restart_s"] = start_console(env, workdir, base, ops, cookie)
        try:
            result["rss_mb_restarted"] = rss_mb(console.pid)[0]
        finally:
            stop(console)
    return result


@contextmanager
def own_servers(workdir: Path) -> Iterator[Any]:
    """An embedded broker and Valkey of the bench's own (or KAFKA_BOOTSTRAP_SERVERS' and
    REDIS_URL's): the console checks its sessions in Redis at every request."""
    from tipline.stack import Stack, start_servers

    stack = Stack(kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""),
                  redis=os.environ.get("REDIS_URL", ""), http="", workdir=workdir)
    try:
        start_servers(stack, redis_logins=False)
        yield stack
    finally:
        stack.stop()


async def sign_in(redis_url: str, secret: bytes) -> str:
    """The bench's analyst in the directory, and a session cookie of theirs."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        directory = AnalystDirectory(redis)
        await directory.add("bench", "synthetic-bench-password")
        return await sessions.Sessions(redis, directory, secret, 3600).open(
            "bench", "analyst", time.time())
    finally:
        await redis.aclose()


def start_console(env: dict[str, str], workdir: Path, base: str, ops: int,
                  cookie: dict[str, str]) -> tuple["subprocess.Popen[bytes]", float]:
    """The console service as a process; how long until it served a page, caught up."""
    started = time.perf_counter()
    console, _ = rebuilt_console(env, workdir, ops, 1800)
    try:
        answer = httpx.get(f"{base}/", cookies=cookie, timeout=60)
        answer.raise_for_status()
    except BaseException:
        stop(console)
        raise
    return console, round(time.perf_counter() - started, 2)


def rebuilt_console(env: dict[str, str], workdir: Path, ops: int,
                    bound_s: float) -> tuple["subprocess.Popen[bytes]", float]:
    """The console service as a process; how long until its read model was caught up."""
    started = time.perf_counter()
    with (workdir / "console.log").open("ab") as log:
        console = subprocess.Popen([sys.executable, "-m", "services.console"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        while not _rebuilt(f"http://127.0.0.1:{ops}/readyz"):
            if console.poll() is not None or time.perf_counter() - started > bound_s:
                raise RuntimeError(f"the console did not catch up: see {workdir}/console.log")
            time.sleep(0.05)
    except BaseException:
        stop(console)
        raise
    return console, time.perf_counter() - started


def stop(console: "subprocess.Popen[bytes]") -> None:
    console.terminate()
    try:
        console.wait(30)
    except subprocess.TimeoutExpired:
        console.kill()
        console.wait()


def render(result: dict[str, Any]) -> str:
    lines = [f"console store: {result['reports']:,} reports, {result['records']:,} records "
             f"applied in {result['fill_s']} s ({result['fill_cpu_s']} CPU s, "
             f"{result['records_per_cpu_s']:,}/CPU s); {result['store_mb']} MB on disk",
             f"the console service started on it with {result['tail_records']:,} more records "
             f"on the broker past its checkpoint: serving, caught up, after {result['start_s']} s",
             f"memory: RSS {result['rss_mb_started']} MB started, {result['rss_mb']} MB after "
             f"the pages, peak {result['rss_mb_peak']} MB",
             f"restart from the checkpoint: serving again after {result['restart_s']} s "
             f"(RSS {result['rss_mb_restarted']} MB)",
             "", "wall time per request over loopback HTTP, to the console service",
             f"{'page':<18} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'requests':>9}"]
    for name, row in result["pages"].items():
        lines.append(f"{name:<18} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8} "
                     f"{row['requests']:>9}")
    return "\n".join(lines)


def cmd_console_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="console-bench-", dir=args.dir) as tmp:
        if args.process:
            measured = run_process(args.reports, args.seed, Path(tmp))
            print(f"console service process: {measured['records']:,} records of "
                  f"{measured['reports']:,} reports published in {measured['published_s']} s; "
                  f"read model rebuilt {measured['rebuilt_s']} s after the process started; "
                  f"RSS {measured['rss_mb']} MB, peak {measured['rss_mb_peak']} MB")
            if args.json:
                Path(args.json).write_text(json.dumps(measured, indent=2))
            return 1 if measured["rss_mb_peak"] >= args.memory_mb else 0
        result = run(args.reports, args.requests, args.seed, Path(tmp), args.tail)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    slow = [n for n, row in result["pages"].items() if row["p95_ms"] >= args.budget_ms]
    over = [f"{k} {result[k]} MB" for k in ("rss_mb_peak",) if result[k] >= args.memory_mb]
    late = result["restart_s"] >= args.restart_s
    if slow or over or late:
        print(f"over budget: pages {slow}, memory {over}, restart {result['restart_s']} s "
              f"(budgets {args.budget_ms} ms, {args.memory_mb} MB, {args.restart_s} s)")
        return 1
    return 0


def run_process(reports: int, seed: int, workdir: Path) -> dict[str, Any]:
    """The console service as a process, rebuilding from `reports` reports on a broker."""
    keys = workdir / "keys"
    ensure_keys(keys)
    with own_servers(workdir) as stack:
        agencies = sorted(AgencyRegistry(CONFIG_DIR / "routing.yaml").agencies)
        started = time.perf_counter()
        records = asyncio.run(publish(stack.kafka, keys, reports, agencies, seed))
        published_s = time.perf_counter() - started
        ops = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka, "TIPLINE_KEYS_DIR": str(keys),
               "TIPLINE_CONSOLE_SESSION_SECRET": secrets.token_urlsafe(32),
               "TIPLINE_CONSOLE_PORT": str(free_port()), "TIPLINE_OPS_PORT": str(ops),
               "TIPLINE_CONSOLE_DATA_DIR": str(workdir / "console"), "REDIS_URL": stack.redis}
        console, rebuilt_s = rebuilt_console(env, workdir, ops, 3600)
        try:
            time.sleep(5)  # settled
            memory = rss_mb(console.pid)
        finally:
            stop(console)
    return {"reports": reports, "records": records, "published_s": round(published_s, 1),
            "rebuilt_s": round(rebuilt_s, 1), "rss_mb": memory[0], "rss_mb_peak": memory[1]}


def _rebuilt(readyz: str) -> bool:
    try:
        return bool(httpx.get(readyz, timeout=2).json()["checks"].get("read model") == "ok")
    except (httpx.HTTPError, ValueError, KeyError):
        return False


async def publish(kafka: str, keys: Path, reports: int, agencies: list[str], seed: int,
                  first: int = 0) -> int:
    """The synthetic events on their topics, as the services write them: sealed by a writer of
    the topic, notices signed."""
    await ensure_topics(Settings(kafka_bootstrap_servers=kafka), topic_names(agencies))
    seals, signer = Seals(keys), Signer(keys)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    count, sent = 0, []
    try:
        for topic, event in synthetic_events(reports, agencies, seed, first=first):
            key = str(getattr(event, "report_id", None) or "bench").encode()
            if isinstance(event, AgencyNotice):
                value = json.dumps(signer.sign(event.model_dump(mode="json"))).encode()
                headers = []
            else:
                value = event.model_dump_json().encode()
                writer = getattr(event, "service", None) or min(WRITERS[topic])
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
    bench = sub.add_parser("console-bench", help="the console service on a store of N "
                           "synthetic reports: every page's p50/p95, its memory, a restart")
    bench.add_argument("--reports", type=int, default=10_000)
    bench.add_argument("--tail", type=int, default=1000,
                       help="more reports, on the broker past the store's checkpoint")
    bench.add_argument("--requests", type=int, default=100, help="requests per kind of page")
    bench.add_argument("--seed", type=int, default=14)
    bench.add_argument("--budget-ms", type=float, default=200.0, help="p95 budget per page")
    bench.add_argument("--memory-mb", type=float, default=200.0, help="peak RSS budget")
    bench.add_argument("--restart-s", type=float, default=10.0,
                       help="budget for a restart from the checkpoint to serve again")
    bench.add_argument("--dir", help="where the store is made (default: the system's temp)")
    bench.add_argument("--json", help="also write the figures to this file")
    bench.add_argument("--process", action="store_true", help="instead: the console service "
                       "rebuilding its store from the events on an embedded broker (or "
                       "KAFKA_BOOTSTRAP_SERVERS): time to catch up, and its memory")
    bench.set_defaults(func=cmd_console_bench)
