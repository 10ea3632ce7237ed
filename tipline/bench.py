"""The benchmark: the pipeline against a raw aiokafka relay chain, each on a fresh broker (or
both on one Apache Kafka: `--kafka apache`).

(a) The ceiling: a chain of raw aiokafka relays, each its own process, as many hops as the
    pipeline has (submitted -> validation -> supplementation -> referral -> agency topic: three
    relays, four topics). A relay reads a batch, decodes and re-encodes each JSON message, sends
    them all, awaits every ack, then commits: the same delivery contract as the services.
    Beside it the same relays at their best: one partition a topic, fed and sunk by processes
    of their own, so the bench process timing is no part of the chain.
    The same chain of FastStream relays built with the services' plumbing (make_broker, batch
    delivery, a typed batch handler; no Redis) gives the framework's own ceiling.
(b) The pipeline: the five services, fed the same number of same-sized messages straight into
    tipline.reports.submitted; a message has arrived when its referral reached the agency topic.
Then: latency at a fixed offered load, 500/s unless told (both, over Kafka; and the pipeline
through the HTTP API),
retraction fan-out to 50 agencies, peak RSS of every service, and optionally memory over a
long replay. Figures are printed, never asserted.
"""

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream import FastStream
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from shared import contracts, topics
from shared.agencies import load_agencies
from shared.batches import Publisher
from shared.contracts import AgencyNotice, Report, ReportSubmitted, derived_id
from shared.kafka import RememberingPartitioner, ensure_topics, kafka_client_options, make_broker
from shared.seals import Seals
from shared.service import freeze_startup_objects
from shared.settings import CONFIG_DIR, Settings
from shared.topics import agency_topic
from shared.topology import topic_names
from tipline import generate
from tipline.esps import dev_logins
from tipline.replay import Replay, percentiles
from tipline.stack import (
    CONSUMERS,
    PIPELINE,
    SERVICES,
    Child,
    Stack,
    copy_name,
    free_port,
    is_server,
    service_of,
    signing_keys,
    start_servers,
    start_services,
)
from tipline.status import health
from tipline.synthetic import PLACES
from tipline.watch import NoticeWatch, Tail

# Three relays between four topics: raw aiokafka ("relay") and FastStream through the services'
# own plumbing ("fsrelay").
CHAINS = {"relay": [f"bench.raw.{i}" for i in range(4)],
          "fsrelay": [f"bench.fs.{i}" for i in range(4)],
          "ceiling": [f"bench.ceiling.{i}" for i in range(4)]}
FANOUT_AGENCIES = [f"bench-{i:02d}" for i in range(1, 51)]
FANOUT_COUNTRY = "ZZ"  # a user-assigned ISO code: routed to all 50 bench agencies
ONE_AGENCY_PLACE = PLACES[0]  # US/CA: one referral a report, like one message out of the chain
ONE_AGENCY = ["icac-ca"]
BENCH_ESP = "bench-esp"
FANOUT_RATE = 10  # actions a second: reports, then their retractions once referred
FANOUT_WARM_UP = 3  # reports through the fan-out before it is timed
# The long replay watches memory at a rate HTTP intake sustains here with room to spare, so the
# stage ends on time and a backlog never passes for growth.
LONG_REPLAY_RATE = 100.0


# Fair: each chain runs as alike as the bench can make them.
# - Each on an embedded broker of its own, fresh. The broker grows slower as it fills: its CPU a
#   request grows with the record batches a partition holds (one partition fed 5,000
#   single-record batches took a produce-and-fetch from 0.9 to 4.3 ms of broker CPU), and with
#   what the other topics hold: the pipeline's p99 at 500/s was 81-90 ms on a fresh broker and
#   97-103 ms after both chains' saturation stages had run on it (measured).
# - Latency first, then throughput, which fills the broker: four rounds of 5,000 messages at
#   500/s through the same raw chain took its p99 from 92 to 203, 447 and 625 ms.
# - Every relay collects garbage as the services do (shared.service.freeze_startup_objects). A
#   relay process imports what the bench does, and a full collection over all of it paused a
#   hop 60-90 ms: the raw chain's p99 at 500/s was 65-121 ms, settled 46-68 (measured). So
#   does the bench itself before it times a stage (`steady`).

# --- The raw relay (runs as its own process: `python -m tipline.bench relay SRC DST GROUP`) ----

async def relay(settings: Settings, source: str, target: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        source, **kafka_client_options(settings), group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    producer = producer_for(settings)
    await producer.start()
    await consumer.start()
    freeze_startup_objects()  # both chains collect garbage as the services do ("Fair", above)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            sends = [
                await producer.send(target, json.dumps(json.loads(r.value)).encode(), key=r.key)
                for records in batches.values() for r in records
            ]
            if sends:
                await asyncio.gather(*sends)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def faststream_relay(settings: Settings, source: str, target: str, group: str) -> None:
    """One hop through the services' own plumbing and nothing else: `make_broker` (telemetry,
    batch delivery, one commit a batch), a typed batch handler that parses each event and
    publishes them all on. No Redis: the gap between this chain and the pipeline is the
    services' own work."""
    broker = make_broker(settings, group, sealed=False)  # bench topics carry no seals
    publish = Publisher(broker)

    @broker.consume(source, group=group, model=ReportSubmitted)
    async def hop(events: list[ReportSubmitted]) -> None:
        await publish.send((e, target, e.report_id) for e in events)

    app = FastStream(broker)

    @app.after_startup
    async def settle() -> None:  # as the services do ("Fair", above)
        freeze_startup_objects()

    await app.run()


# --- Feeding and timing ---------------------------------------------------------------------

def producer_for(settings: Settings) -> AIOKafkaProducer:
    """A producer as the services' (acks from all replicas, the same linger)."""
    return AIOKafkaProducer(**kafka_client_options(settings), acks="all",
                            linger_ms=settings.kafka_linger_ms,
                            max_batch_size=settings.kafka_max_batch_bytes,
                            partitioner=RememberingPartitioner())  # as the services send


def submitted(run: str, n: int, place: dict[str, Any]) -> tuple[str, bytes]:
    """A valid ReportSubmitted, as intake would publish it."""
    report_id = f"{run}-{n}"
    report = Report.model_validate({
        "incident_type": "Child Sexual Molestation",
        "incident_at": "2026-01-01T00:00:00+00:00",
        "platform": "chat",
        "reporter_email": f"trust-safety-{n}@esp.example",
        "reported_users": [{"screen_name": f"user{n}", "esp_identifier": f"acct-{n}",
                            "ip_address": "192.0.2.7"}],
        "location": place,
        "additional_info": f"synthetic benchmark report {n} " + "x" * 300,
    })
    event = ReportSubmitted(event_id=derived_id(report_id, "submitted"), report_id=report_id,
                            esp_id="bench-esp", report=report)
    return report_id, event.model_dump_json().encode()


async def feed(
    producer: AIOKafkaProducer, topic: str, messages: list[tuple[str, bytes]],
    rate: float | None, sent_at: dict[str, float], seals: Seals | None = None,
) -> None:
    """Send at `rate` a second (None: as fast as the producer takes them), acks awaited;
    sealed as intake's when `seals` is given (the pipeline's own topic)."""
    started = time.monotonic()
    pending = []
    for i, (key, value) in enumerate(messages):
        if rate:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        sent_at[key] = time.monotonic()
        headers = seals.headers("intake", topic, key.encode(), value) if seals else None
        pending.append(await producer.send(topic, value, key=key.encode(), headers=headers))
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def warm_up(producer: AIOKafkaProducer, topic: str, arrived: dict[str, float],
                  prefix: str, timeout: float, seals: Seals | None = None) -> None:
    """20 messages through before anything is timed (consumers joined, connections open)."""
    sent_at: dict[str, float] = {}
    await feed(producer, topic, [submitted(prefix, i, ONE_AGENCY_PLACE) for i in range(20)],
               None, sent_at, seals)
    await wait_for(lambda: sent_at.keys() <= arrived.keys(), timeout, f"{prefix} warm-up")


async def saturate(
    producer: AIOKafkaProducer, topic: str, arrived: dict[str, float], prefix: str,
    seconds: float, window: int = 400, seals: Seals | None = None,
) -> float:
    """End-to-end messages a second with `window` always in flight, over `seconds`."""
    sent_at: dict[str, float] = {}
    in_flight: set[str] = set()  # looked over every turn: the window's, not all sent so far
    n = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        in_flight = {k for k in in_flight if k not in arrived}
        if len(in_flight) < window:
            more = [submitted(prefix, n + i, ONE_AGENCY_PLACE) for i in range(window // 4)]
            n += len(more)
            await feed(producer, topic, more, None, sent_at, seals)
            in_flight.update(k for k, _ in more)
        else:
            await asyncio.sleep(0.01)
    done = [arrived[k] for k in sent_at if k in arrived]
    elapsed = max(max(done, default=started) - started, 1e-9)
    with contextlib.suppress(TimeoutError):  # drain, so the next stage starts from empty
        await wait_for(lambda: sent_at.keys() <= arrived.keys(), 90, "drain")
    return round(len(done) / elapsed, 1)


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU milliseconds a message each process spent over a stage: unlike a rate, it holds on
    a busy machine, so it says where the time goes even when the rates are noisy."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.before = {c.name: cpu_seconds(c.process.pid) for c in children}

    def per_message(self, messages: int) -> dict[str, float]:
        return {c.name: round(1000 * (cpu_seconds(c.process.pid) - self.before[c.name])
                              / max(messages, 1), 3) for c in self.children}


async def steady(
    producer: AIOKafkaProducer, topic: str, arrived: dict[str, float], prefix: str,
    rate: float, seconds: float, seals: Seals | None = None,
    sent_at: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Latency percentiles at a fixed offered rate (waits for the last message, bounded);
    `sent_at` is given each message's send time."""
    # The bench's own collector must not stop the clock it times with: a full collection of
    # what earlier stages left held every arrival of the pipeline's stage 69 ms (measured).
    freeze_startup_objects()
    sent_at = {} if sent_at is None else sent_at
    messages = [submitted(prefix, i, ONE_AGENCY_PLACE) for i in range(int(rate * seconds))]
    await feed(producer, topic, messages, rate, sent_at, seals)
    with contextlib.suppress(TimeoutError):
        await wait_for(lambda: sent_at.keys() <= arrived.keys(), 60, "steady load")
    return {"offered_per_s": rate, **percentiles(latencies(sent_at, arrived)),
            "not_arrived": len(sent_at.keys() - arrived.keys())}


async def wait_for(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout}s")
        await asyncio.sleep(0.05)


class RawSink(Tail):
    """Arrival times at the end of the raw chain."""

    max_records = 5000

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(settings, [topic])
        self.arrived: dict[str, float] = {}

    def took(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]],
             arrived: float) -> None:
        for r in records:
            self.arrived.setdefault(r.key.decode(), arrived)


def latencies(sent_at: dict[str, float], arrived: dict[str, float]) -> list[float]:
    return [arrived[k] - t for k, t in sent_at.items() if k in arrived]


@dataclass
class Plan:
    """How long each stage runs; the whole default run takes about three minutes."""

    saturate_s: float = 20.0
    steady_s: float = 10.0
    offered: float = 500.0  # the latency stages' load, whatever the measured maximum
    fanout_reports: int = 20
    copies: int = 1  # the pipeline's throughput again with up to this many copies a service


# --- Memory ---------------------------------------------------------------------------------

def memory(pid: int) -> dict[str, float]:
    """Current and peak resident set size of a process, MB."""
    fields: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


def service_memory(stack: Stack) -> dict[str, dict[str, float]]:
    return {c.name: memory(c.process.pid) for c in stack.children if c.name in SERVICES}


# --- The stages -----------------------------------------------------------------------------

def routing_file(workdir: Path) -> Path:
    """The usual routing rules plus 50 bench agencies, all owed every report from ZZ."""
    data = yaml.safe_load((CONFIG_DIR / "routing.yaml").read_text())
    data["agencies"] += [{"id": a, "name": f"Benchmark agency {a}"} for a in FANOUT_AGENCIES]
    data["rules"]["countries"][FANOUT_COUNTRY] = FANOUT_AGENCIES
    path = workdir / "routing-bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _stage_chain(settings: Settings, stack: Stack, plan: Plan, run: str, kind: str,
                       latency: bool = True, on: list[Child] | None = None) -> dict[str, Any]:
    """A relay chain of `kind` ("relay" or "fsrelay"): throughput, latency, the relays' memory."""
    names = CHAINS[kind]
    await ensure_topics(settings, names[:-1])
    # The sink reads as an agency reads its notice topic: as many partitions, so the chain's
    # last hop costs what the pipeline's does.
    await ensure_topics(settings, names[-1:], partitions=settings.kafka_agency_partitions)
    relays = [stack.spawn(f"{kind}-{i + 1}", [sys.executable, "-m", "tipline.bench", kind,
                                              names[i], names[i + 1], f"bench-{kind}-{i + 1}"],
                          env={**stack.env(), **stack.admin_env})  # bench topics: no ACLs
              for i in range(3)]
    sink = RawSink(settings, names[-1])
    await sink.start()
    producer = producer_for(settings)
    await producer.start()
    try:
        await warm_up(producer, names[0], sink.arrived, f"{run}-{kind}warm", 60)
        out: dict[str, Any] = {}
        if latency:  # "latency first", above
            out["latency_ms"] = await steady(producer, names[0], sink.arrived,
                                             f"{run}-{kind}lat", plan.offered, plan.steady_s)
        meter = CpuMeter((servers(stack) if on is None else on) + relays)
        before = len(sink.arrived)
        out["throughput_per_s"] = await saturate(
            producer, names[0], sink.arrived, f"{run}-{kind}", plan.saturate_s)
        out["cpu_ms_per_msg"] = meter.per_message(len(sink.arrived) - before)
        out["memory_mb"] = {c.name: memory(c.process.pid) for c in relays}
        return out
    finally:
        await producer.stop()
        await sink.stop()
        stack.retire(relays)  # out of the way of what comes next


# --- The honest ceiling: the raw relays with nothing of the bench in their way ----------------
# The same relay code as the raw chain, but every topic of one partition, and the feeder and the
# sink each a process of their own (`python -m tipline.bench ceiling-feed|ceiling-sink ...`):
# the bench process timing while it feeds and sinks is then no part of the chain.
CEILING_PARTITIONS = 1

async def ceiling_sink(settings: Settings, topic: str, prefix: str, count: int, out: Path,
                       timeout_s: float = 120.0) -> None:
    """Arrival times of `count` messages of `prefix` at `topic`'s end, written to `out` (JSON);
    `out`.ready once positioned, so nothing the feeder sends is missed."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=None,
                                enable_auto_commit=False,
                                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    Path(f"{out}.ready").touch()
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(arrived) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            now = time.monotonic()
            for records in batches.values():
                for r in records:
                    key = r.key.decode() if r.key else ""
                    if key.startswith(prefix):
                        arrived.setdefault(key, now)
    finally:
        await consumer.stop()
    out.write_text(json.dumps(arrived))


async def ceiling_feed(settings: Settings, topic: str, prefix: str, count: int, rate: float,
                       out: Path) -> None:
    """`count` messages of `prefix` into `topic` at `rate` a second (0: as fast as the producer
    takes them); their send times written to `out` (JSON)."""
    messages = [submitted(prefix, i, ONE_AGENCY_PLACE) for i in range(count)]
    producer = producer_for(settings)
    await producer.start()
    freeze_startup_objects()
    sent_at: dict[str, float] = {}
    try:
        await feed(producer, topic, messages, rate or None, sent_at)
    finally:
        await producer.stop()
    out.write_text(json.dumps(sent_at))


async def driven(stack: Stack, topics_: list[str], prefix: str, count: int,
                 rate: float) -> tuple[dict[str, float], dict[str, float]]:
    """Send and arrival times of `count` messages through a chain, fed and sunk by processes of
    their own."""
    env = {**stack.env(), **stack.admin_env}
    sent, arrived = stack.workdir / f"{prefix}.sent", stack.workdir / f"{prefix}.arrived"
    sink = stack.spawn(f"sink-{prefix}", [sys.executable, "-m", "tipline.bench", "ceiling-sink",
                                          topics_[-1], prefix, str(count), str(arrived)], env=env)
    await wait_for(lambda: Path(f"{arrived}.ready").exists() or sink.process.poll() is not None,
                   30, "the ceiling's sink")
    feeder = stack.spawn(f"feed-{prefix}", [sys.executable, "-m", "tipline.bench",
                                            "ceiling-feed", topics_[0], prefix, str(count),
                                            str(rate), str(sent)], env=env)
    await asyncio.to_thread(feeder.process.wait)
    await asyncio.to_thread(sink.process.wait)
    stack.retire([feeder, sink])
    return (json.loads(sent.read_text()) if sent.exists() else {},
            json.loads(arrived.read_text()) if arrived.exists() else {})


async def _stage_ceiling(settings: Settings, stack: Stack, plan: Plan, run: str,
                         on: list[Child]) -> dict[str, Any]:
    """The raw relays at their best: one partition a topic, feeder and sink out of the bench
    process. Throughput: `plan.saturate_s` thousand messages offered at once."""
    names = CHAINS["ceiling"]
    await ensure_topics(settings, names, partitions=CEILING_PARTITIONS)
    relays = [stack.spawn(f"ceiling-{i + 1}", [sys.executable, "-m", "tipline.bench", "relay",
                                               names[i], names[i + 1], f"bench-ceiling-{i + 1}"],
                          env={**stack.env(), **stack.admin_env})
              for i in range(3)]
    try:
        await driven(stack, names, f"{run}-cwarm", 20, 0)
        out: dict[str, Any] = {}
        sent, arrived = await driven(stack, names, f"{run}-clat", int(plan.offered * plan.steady_s),
                                     plan.offered)
        out["latency_ms"] = {"offered_per_s": plan.offered,
                             **percentiles(latencies(sent, arrived)),
                             "not_arrived": len(sent.keys() - arrived.keys())}
        meter = CpuMeter(on + relays)
        count = int(plan.saturate_s * 1000)
        sent, arrived = await driven(stack, names, f"{run}-ctp", count, 0)
        elapsed = max(max(arrived.values(), default=0.0) - min(sent.values(), default=0.0), 1e-9)
        out["throughput_per_s"] = round(len(arrived) / elapsed, 1)
        out["cpu_ms_per_msg"] = meter.per_message(len(arrived))
        return out
    finally:
        stack.retire(relays)


def servers(stack: Stack) -> list[Child]:
    return [c for c in stack.children if is_server(c.name)]


async def _stage_pipeline(settings: Settings, stack: Stack, plan: Plan, run: str,
                          copies: int = 1, on: list[Child] | None = None) -> dict[str, Any]:
    """The pipeline's throughput and its latency at the offered rate; with `copies` > 1, then
    its throughput again with each further copy of every consuming service started."""
    watch = NoticeWatch(settings, ONE_AGENCY)  # as many partitions as the raw chain's sink
    arrived: dict[str, float] = {}

    def on_notice(report_id: str) -> None:
        refs = watch.reports[report_id].referrals
        if refs and report_id not in arrived:
            arrived[report_id] = max(t for t, _ in refs.values())

    watch.on_notice = on_notice
    await watch.start()
    producer = producer_for(settings)
    await producer.start()
    seals = Seals(settings.tipline_keys_dir)

    async def throughput(label: str) -> tuple[float, dict[str, float]]:
        await warm_up(producer, topics.REPORTS_SUBMITTED, arrived, f"{run}-{label}warm", 90,
                      seals)
        meter = CpuMeter((servers(stack) if on is None else on)
                         + [c for c in stack.children if service_of(c.name) in SERVICES])
        before = len(arrived)
        rate = await saturate(producer, topics.REPORTS_SUBMITTED, arrived, f"{run}-{label}tp",
                              plan.saturate_s, seals=seals)
        return rate, meter.per_message(len(arrived) - before)

    try:
        await warm_up(producer, topics.REPORTS_SUBMITTED, arrived, f"{run}-latwarm", 90, seals)
        before, sent_at = await service_totals(stack), dict[str, float]()
        latency = await steady(producer, topics.REPORTS_SUBMITTED, arrived, f"{run}-lat",
                               plan.offered, plan.steady_s, seals, sent_at)  # "latency first"
        after = await service_totals(stack)
        latency["gc_pauses"] = gc_since(before, after)
        latency["batches"] = batches_since(before, after)
        latency["hops"] = await where_latency_goes(settings, f"{run}-lat-", sent_at, arrived)
        rate, cpu = await throughput("")
        by_copies = {1: rate}
        for copy in range(2, copies + 1):
            say(f"    {copy} copies of each consuming service ...")
            await asyncio.to_thread(start_services, stack, CONSUMERS, copy)
            by_copies[copy], _ = await throughput(f"c{copy}")
        # The later stages run on one copy a service, as without --copies.
        further = {copy_name(s, n) for s in CONSUMERS for n in range(2, copies + 1)}
        await asyncio.to_thread(stack.retire, [c for c in stack.children if c.name in further])
        out = {"throughput_per_s": rate, "latency_ms": latency, "cpu_ms_per_msg": cpu,
               "by_copies": by_copies}
        out["duplicates_absorbed"] = watch.duplicates
        return out
    finally:
        await producer.stop()
        await watch.stop()


async def all_ready(stack: Stack, timeout: float = 60) -> None:
    """Until every service's /readyz answers ready: each has started all its subscribers."""
    for child in stack.children:
        deadline = time.monotonic() + timeout
        while child.ops and not (await health(child.ops))["ready"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} not ready after {timeout} s")
            await asyncio.sleep(0.1)


Totals = dict[str, dict[str, float]]  # service -> what its metrics counted so far
NOTHING = {"gc_seconds": 0.0, "collections": 0.0, "upto_10ms": 0.0,
           "batches": 0.0, "handler_seconds": 0.0, "records": 0.0}
# What each hop of the latency stage reads: its batches are the hop's, its input topics are the
# catalogue's for that model (referral's are three, one a priority).
HOP_MODELS: dict[str, type[BaseModel]] = {"validation": contracts.ReportSubmitted,
                                          "supplementation": contracts.ReportValidated,
                                          "referral": contracts.ReportSupplemented}
HOP_INPUTS = {hop: [t.name for t in topics.read_by(hop) if t.model is model]
              for hop, model in HOP_MODELS.items()}


async def service_totals(stack: Stack) -> Totals:
    """Each service's garbage-collection pauses and batches handled so far (on its hop's input
    topic), from its ops endpoint's metrics."""
    out: Totals = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for child in stack.children:
            if child.ops is None or service_of(child.name) not in SERVICES:
                continue
            totals, inputs = dict(NOTHING), HOP_INPUTS.get(service_of(child.name), [])
            text = (await client.get(f"{child.ops}/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if family.name == "tipline_gc_pause_seconds":
                        if sample.name.endswith("_sum"):
                            totals["gc_seconds"] += sample.value
                        elif sample.name.endswith("_count"):
                            totals["collections"] += sample.value
                        elif sample.labels.get("le") == "0.01":
                            totals["upto_10ms"] += sample.value
                    elif sample.labels.get("topic") not in inputs:
                        continue
                    elif family.name == "tipline_handler_seconds":
                        if sample.name.endswith("_sum"):
                            totals["handler_seconds"] += sample.value
                        elif sample.name.endswith("_count"):
                            totals["batches"] += sample.value
                    elif sample.name == "tipline_events_in_total":
                        totals["records"] += sample.value
            out[child.name] = totals
    return out


def gc_since(before: Totals, after: Totals) -> dict[str, dict[str, float]]:
    """Per service: collections, their total ms and how many paused over 10 ms, in between."""
    out = {}
    for name, now in after.items():
        was = before.get(name, NOTHING)
        collections = now["collections"] - was["collections"]
        out[name] = {"collections": collections,
                     "total_ms": round(1000 * (now["gc_seconds"] - was["gc_seconds"]), 1),
                     "over_10ms": collections - (now["upto_10ms"] - was["upto_10ms"])}
    return out


def batches_since(before: Totals, after: Totals) -> dict[str, dict[str, float]]:
    """Per hop's service: its batches in between, their mean size and how long a handler took
    with one on average (waits included: Redis, the broker's acknowledgements)."""
    out = {}
    for name in HOP_INPUTS:
        now, was = after.get(name, NOTHING), before.get(name, NOTHING)
        batches = now["batches"] - was["batches"]
        out[name] = {"batches": batches,
                     "records_a_batch": round((now["records"] - was["records"])
                                              / max(batches, 1), 1),
                     "handler_ms": round(1000 * (now["handler_seconds"] - was["handler_seconds"])
                                         / max(batches, 1), 2)}
    return out


class WrittenAt(Tail):
    """When each report's record was written on each stage's topics (the producer's create
    time, ms): the pipeline's latency hop by hop."""

    max_records = 5000

    def __init__(self, settings: Settings, stages: dict[str, list[str]], prefix: str) -> None:
        super().__init__(settings, [t for ts in stages.values() for t in ts])
        self.stage_of = {t: stage for stage, ts in stages.items() for t in ts}
        self.prefix = prefix.encode()
        self.at: dict[str, dict[str, int]] = {stage: {} for stage in stages}

    def took(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]],
             arrived: float) -> None:
        at = self.at[self.stage_of[tp.topic]]
        for r in records:
            if r.key is not None and r.key.startswith(self.prefix):
                at.setdefault(r.key.decode(), r.timestamp)


async def where_latency_goes(settings: Settings, prefix: str, sent_at: dict[str, float],
                             arrived: dict[str, float]) -> dict[str, Any]:
    """Each hop's share of the latency stage's reports (percentiles, ms): from one record's
    create time to the next's, and from referral's notice to the bench reading it (the rest of
    each report's latency)."""
    stages = {"submitted": HOP_INPUTS["validation"], "validated": HOP_INPUTS["supplementation"],
              "supplemented": HOP_INPUTS["referral"], "notice": [agency_topic(ONE_AGENCY[0])]}
    written = WrittenAt(settings, stages, prefix)
    await written.start(from_beginning=True)
    try:
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: all(sent_at.keys() <= at.keys()
                                       for at in written.at.values()), 30, "hop times")
    finally:
        await written.stop()
    at = written.at
    hops = {"validation": ("submitted", "validated"),
            "supplementation": ("validated", "supplemented"),
            "referral": ("supplemented", "notice")}
    out = {hop: percentiles([(at[b][k] - at[a][k]) / 1000 for k in sent_at
                             if k in at[a] and k in at[b]])
           for hop, (a, b) in hops.items()}
    out["to the reader"] = percentiles([
        arrived[k] - sent_at[k] - (at["notice"][k] - at["submitted"][k]) / 1000
        for k in sent_at if k in arrived and k in at["notice"] and k in at["submitted"]])
    return out


def _agency_ids(settings: Settings) -> list[str]:
    return list(load_agencies(settings.tipline_routing_file))


def _stream(count: int, place: dict[str, Any], agencies: list[str],
            retract_after: bool) -> list[dict[str, Any]]:
    """Valid reports from one place (owed to `agencies`), each retracted after its referral if
    asked."""
    rng = random.Random(count)
    out: list[dict[str, Any]] = []
    for i in range(count):
        report = {**generate.synthetic(rng), "location": place,
                  "incident_type": "Child Sexual Molestation"}
        out.append({"t": 0, "seq": len(out), "actor": "esp", "action": "submit", "ref": f"b{i}",
                    "esp_id": BENCH_ESP, "report": report, "expect": "valid",
                    "agencies": agencies})
        if retract_after:
            out.append({"t": 0, "seq": len(out), "actor": "esp", "action": "retract",
                        "ref": f"b{i}", "esp_id": BENCH_ESP, "when": "after_referral",
                        "reason": "benchmark retraction", "expect": "retracted_after_referral",
                        "agencies": agencies})
    return out


async def _stage_http(settings: Settings, url: str, plan: Plan,
                      logins: dict[str, str]) -> dict[str, Any]:
    stream = _stream(int(plan.offered * plan.steady_s), ONE_AGENCY_PLACE, ONE_AGENCY,
                     retract_after=False)
    result = await Replay(settings, url, logins, concurrency=128, agencies=ONE_AGENCY).run(
        stream, rate=str(plan.offered), settle_timeout=60)
    return {"offered_per_s": plan.offered, "achieved_per_s": result["achieved_rate"],
            "errors": result["errors"], "lost": result["lost"],
            "latency_ms": result["latency_ms"]["submit_to_referral_delivered"]}


async def _stage_fanout(settings: Settings, url: str, reports: int,
                        logins: dict[str, str]) -> dict[str, Any]:
    async def fan_out(count: int) -> tuple[Replay, dict[str, Any]]:
        stream = _stream(count, {"country": FANOUT_COUNTRY}, FANOUT_AGENCIES,
                         retract_after=True)
        replay = Replay(settings, url, logins, concurrency=8, agencies=FANOUT_AGENCIES)
        return replay, await replay.run(stream, rate=str(FANOUT_RATE), settle_timeout=60)

    # Warmed up untimed, as every stage is: the first records on 50 fresh agency topics are
    # not what a retraction costs (docs/load-testing.md, "The fan-out warmed up").
    await fan_out(FANOUT_WARM_UP)
    replay, result = await fan_out(reports)
    return {"agencies": len(FANOUT_AGENCIES), "reports": reports, "lost": result["lost"],
            "offered_per_s": FANOUT_RATE,
            "oracle": {k: v for k, v in result["oracle"].items() if k != "examples"},
            "latency_ms": {**result["latency_ms"]["retract_to_all_corrections_delivered"],
                           "hops": await where_fanout_goes(settings, replay)}}


class RetractionWritten(Tail):
    """When each report's retraction was written, and the last of its corrections on the agency
    topics (the producer's create time, ms)."""

    def __init__(self, settings: Settings, report_ids: set[str]) -> None:
        super().__init__(settings, [topics.RETRACTIONS_REQUESTED,
                                    *map(agency_topic, FANOUT_AGENCIES)])
        self.report_ids = report_ids
        self.requested: dict[str, int] = {}
        self.corrected: dict[str, int] = {}

    def took(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]],
             arrived: float) -> None:
        for r in records:
            report_id = r.key.decode() if r.key is not None else ""
            if report_id not in self.report_ids:
                continue
            if tp.topic == topics.RETRACTIONS_REQUESTED:
                self.requested.setdefault(report_id, r.timestamp)
            elif AgencyNotice.model_validate_json(r.value).kind == "correction":
                self.corrected[report_id] = max(self.corrected.get(report_id, 0), r.timestamp)


async def where_fanout_goes(settings: Settings, replay: Replay) -> dict[str, Any]:
    """Each retraction of the fan-out, hop by hop (percentiles, ms): from its request sent to
    its RetractReport written (intake), to the last of its corrections written (retraction),
    and on to the bench reading that one (to the reader). The replay's times are monotonic and
    a record's are the wall clock's: the first and last hop cross from one to the other."""
    asked = {c.report_id: c.retract_first_try for c in replay.cases.values()
             if c.report_id and c.retract_first_try is not None}
    read = {r: max(t for t, _ in seen.corrections.values())
            for r, seen in replay.watch.reports.items() if r in asked and seen.corrections}
    written = RetractionWritten(settings, set(asked))
    await written.start(from_beginning=True)
    try:
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: asked.keys() <= written.requested.keys()
                           and read.keys() <= written.corrected.keys(), 30, "retraction times")
    finally:
        await written.stop()
    to_wall = time.time() - time.monotonic()
    requested = {r: t / 1000 for r, t in written.requested.items() if r in asked}
    corrected = {r: t / 1000 for r, t in written.corrected.items() if r in requested}
    return {"intake": percentiles([requested[r] - (asked[r] + to_wall) for r in requested]),
            "retraction": percentiles([corrected[r] - requested[r] for r in corrected]),
            "to the reader": percentiles([read[r] + to_wall - corrected[r]
                                          for r in corrected if r in read])}


async def _stage_long(settings: Settings, url: str, stack: Stack, logins: dict[str, str],
                      seconds: float, rate: float) -> dict[str, Any]:
    """Steady load for `seconds`, sampling every service's RSS: memory should stay flat."""
    # No amendments: the bench's stack serves no analyst API.
    stream = list(generate.events(int(rate * 60), seed=11, rate=rate,
                                  mix=generate.Mix(amend=0)))
    samples: list[dict[str, Any]] = []

    async def sample() -> None:
        start = time.monotonic()
        while True:
            samples.append({"t": round(time.monotonic() - start, 1),
                            **{k: v["rss_mb"] for k, v in service_memory(stack).items()}})
            await asyncio.sleep(max(seconds / 20, 1.0))

    sampler = asyncio.create_task(sample())
    try:
        result = await Replay(settings, url, logins, concurrency=64).run(
            stream, rate=str(rate), duration=seconds, settle_timeout=120)
    finally:
        sampler.cancel()
    names = [k for k in samples[0] if k != "t"] if samples else []
    growth = ({n: round(samples[-1][n] - samples[len(samples) // 4][n], 1) for n in names}
              if len(samples) > 4 else {})
    return {"seconds": seconds, "rate": rate, "lost": result["lost"], "samples": samples,
            "rss_growth_mb": growth}


class Servers:
    """Where each stage runs: on the embedded broker, a fresh broker and Valkey of its own each
    ("Fair", above); on Apache Kafka, one cluster (`tipline up --kafka apache`'s) for them all,
    each stage with topics of its own, logged in as the admin (the services as themselves)."""

    def __init__(self, workdir: Path, kafka: str) -> None:
        self.workdir, self.kafka = workdir, kafka
        self.shared: Stack | None = None

    def __enter__(self) -> "Servers":
        if self.kafka == "apache":
            self.shared = Stack(kafka="", redis="", http="", workdir=self.workdir / "apache")
            start_servers(self.shared, kafka="apache")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shared is not None:
            self.shared.stop()

    def stage(self, workdir: Path, http: str = "") -> Stack:
        """A stack for one stage: with servers of its own, or a view of the shared ones."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.shared is None:
            stack = Stack(kafka="", redis="", http=http, workdir=workdir)
            start_servers(stack)
            return stack
        shared = self.shared
        return Stack(kafka=shared.kafka, redis=shared.redis, http=http, workdir=workdir,
                     redis_username=shared.redis_username, redis_password=shared.redis_password,
                     service_env=shared.service_env, kafka_env=shared.kafka_env,
                     admin_env=shared.admin_env)

    def servers(self, stack: Stack) -> list[Child]:
        """The broker and Valkey a stage runs on (their CPU is the stage's too)."""
        return servers(self.shared or stack)


async def _run(workdir: Path, plan: Plan, long_replay_s: float,
               profile: bool, kafka: str = "embedded") -> dict[str, Any]:
    run = f"b{time.time_ns()}"
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # always fresh servers
    os.environ.pop("REDIS_URL", None)
    if plan.copies > 1:  # room for the copies: a consumer a partition at most
        os.environ["KAFKA_PARTITIONS"] = str(max(8, plan.copies))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "load_avg_at_start": os.getloadavg()},
                               "broker": kafka}
    with Servers(workdir, kafka) as where:
        say("(a) the ceiling: raw relays, one partition, feeder and sink in processes ...")
        results["ceiling"] = await _ceiling_alone(where, workdir / "ceiling", plan, run)
        say(f"    {results['ceiling']['throughput_per_s']}/s; raw relay chain ...")
        results["raw"] = await _chain_alone(where, workdir / "raw", plan, run, "relay")
        say(f"    {results['raw']['throughput_per_s']}/s; FastStream relay chain ...")
        results["framework"] = await _chain_alone(where, workdir / "framework", plan, run,
                                                  "fsrelay", latency=False)
        say(f"    {results['framework']['throughput_per_s']}/s; (b) starting the pipeline ...")
        await _pipeline(where, workdir / "pipeline", plan, run, long_replay_s, profile, results)
    results["ratio"] = round(results["pipeline"]["throughput_per_s"]
                             / results["raw"]["throughput_per_s"], 3)
    results["ratio_to_ceiling"] = round(results["pipeline"]["throughput_per_s"]
                                        / results["ceiling"]["throughput_per_s"], 3)
    # The pipeline against the raw chain in the same run, as docs/load-testing.md compares them:
    # CPU a report over every process against the chain's a message, and p99 at the same rate.
    results["cpu_ratio"] = round(cpu_ms(results["pipeline"]) / cpu_ms(results["raw"]), 2)
    results["p99_ratio"] = round(results["pipeline"]["latency_ms"]["p99"]
                                 / results["raw"]["latency_ms"]["p99"], 2)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    return results


async def _pipeline(where: Servers, workdir: Path, plan: Plan, run: str, long_replay_s: float,
                    profile: bool, results: dict[str, Any]) -> None:
    stack = where.stage(workdir, http=f"http://127.0.0.1:{free_port()}")
    try:
        routing = routing_file(stack.workdir)
        os.environ["TIPLINE_ROUTING_FILE"] = str(routing)
        settings = stack.settings(tipline_routing_file=routing,
                                  tipline_keys_dir=signing_keys(stack))
        results["fetch_max_wait_ms"] = settings.kafka_fetch_max_wait_ms
        await ensure_topics(settings, topic_names(_agency_ids(settings)))
        await asyncio.to_thread(start_services, stack, PIPELINE)
        await all_ready(stack)  # no group join or start-up collection inside a timed stage
        profilers = _start_profilers(stack, workdir) if profile else []
        results["pipeline"] = await _stage_pipeline(settings, stack, plan, run, plan.copies,
                                                    where.servers(stack))
        for p in profilers:
            p.wait()
        say(f"    {results['pipeline']['throughput_per_s']}/s; through the HTTP API ...")
        # The bench's own ESP, and the generated stream's (esp-1 ... of tipline.generate).
        logins = await dev_logins(settings, [BENCH_ESP, *(f"esp-{i}" for i in range(1, 4))],
                                  stack.workdir)
        results["http"] = await _stage_http(settings, stack.http, plan, logins)
        say("    retraction fan-out to 50 agencies ...")
        results["fanout"] = await _stage_fanout(settings, stack.http, plan.fanout_reports,
                                                logins)
        if long_replay_s:
            say(f"    long replay, {long_replay_s}s ...")
            results["long_replay"] = await _stage_long(
                settings, stack.http, stack, logins, long_replay_s,
                min(plan.offered, LONG_REPLAY_RATE))
        results["memory_mb"] = service_memory(stack)
    finally:
        await asyncio.to_thread(stack.stop)


async def _chain_alone(where: Servers, workdir: Path, plan: Plan, run: str, kind: str,
                       latency: bool = True) -> dict[str, Any]:
    """A relay chain on a broker of its own ("Fair", above), or its own topics of the shared
    Apache Kafka."""
    stack = where.stage(workdir)  # its Valkey only idles: the relays' settings name one
    try:
        return await _stage_chain(stack.settings(), stack, plan, run, kind, latency,
                                  where.servers(stack))
    finally:
        await asyncio.to_thread(stack.stop)


async def _ceiling_alone(where: Servers, workdir: Path, plan: Plan, run: str) -> dict[str, Any]:
    """The ceiling on a broker of its own ("Fair", above)."""
    stack = where.stage(workdir)
    try:
        return await _stage_ceiling(stack.settings(), stack, plan, run, where.servers(stack))
    finally:
        await asyncio.to_thread(stack.stop)


def _start_profilers(stack: Stack, workdir: Path) -> list[Any]:
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        say("py-spy not installed: no profiles")
        return []
    out = []
    for child in stack.children:
        if child.name in ("validation", "supplementation", "referral"):
            svg = workdir / f"profile-{child.name}.txt"
            out.append(subprocess.Popen(
                [spy, "record", "--pid", str(child.process.pid), "--format", "raw",
                 "--output", str(svg), "--rate", "100", "--duration", "15"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(workdir: Path, *, quick: bool = False, long_replay_s: float = 0.0,
         profile: bool = False, offered: float | None = None, copies: int = 1,
         kafka: str = "embedded") -> dict[str, Any]:
    run_dir = workdir / time.strftime("%Y%m%d-%H%M%S")  # logs and profiles stay for a look
    run_dir.mkdir(parents=True, exist_ok=True)
    say(f"logs in {run_dir}")
    plan = Plan(saturate_s=6, steady_s=4, fanout_reports=5) if quick else Plan()
    if offered:
        plan.offered = offered
    plan.copies = copies
    return asyncio.run(_run(run_dir, plan, long_replay_s, profile, kafka))


def cpu_ms(stage: dict[str, Any]) -> float:
    """A chain's CPU a message over all its processes, the broker and Valkey included."""
    return float(sum(stage["cpu_ms_per_msg"].values()))


def render(r: dict[str, Any]) -> str:
    def p(lat: dict[str, Any]) -> str:
        return f"{lat['p50']!s:>8} {lat['p95']!s:>8} {lat['p99']!s:>8} {lat['max']!s:>8}"

    raw, pipe, http, fan = r["raw"], r["pipeline"], r["http"], r["fanout"]
    ceil = r["ceiling"]
    broker = ("one Apache Kafka for both chains" if r.get("broker") == "apache"
              else "each chain on a fresh embedded broker")
    lines = [
        f"broker: {broker}",
        f"{'':<46} {'max msg/s':>9} {'offered/s':>9}   {'p50':>8} {'p95':>8} {'p99':>8} "
        f"{'max':>8}  ms",
        f"{'(a) raw aiokafka relay chain (3 relays)':<46} {raw['throughput_per_s']:>9} "
        f"{raw['latency_ms']['offered_per_s']:>9}   {p(raw['latency_ms'])}",
        f"{'    ceiling: same relays, 1 partition, fed apart':<46} "
        f"{ceil['throughput_per_s']:>9} {ceil['latency_ms']['offered_per_s']:>9}   "
        f"{p(ceil['latency_ms'])}",
        f"{'    FastStream relay chain (3 relays, no Redis)':<46} "
        f"{r['framework']['throughput_per_s']:>9}",
        f"{'(b) pipeline, Kafka in -> referral at agency':<46} {pipe['throughput_per_s']:>9} "
        f"{pipe['latency_ms']['offered_per_s']:>9}   {p(pipe['latency_ms'])}",
        *(f"{f'    pipeline, {n} copies of each consumer':<46} {rate:>9}"
          for n, rate in pipe.get("by_copies", {}).items() if int(n) > 1),
        f"{'    pipeline, HTTP submit -> referral':<46} {'':>9} "
        f"{http['offered_per_s']:>9}   {p(http['latency_ms'])}",
        f"{'    retraction -> 50 agencies corrected':<46} {'':>9} "
        f"{fan['offered_per_s']:>9}   {p(fan['latency_ms'])}",
        "",
        f"ratio pipeline/raw throughput = {r['ratio']:.1%}; pipeline/ceiling "
        f"{r['ratio_to_ceiling']:.1%}; FastStream chain/raw "
        f"{r['framework']['throughput_per_s'] / r['raw']['throughput_per_s']:.1%}   "
        f"(fetch_max_wait_ms {r.get('fetch_max_wait_ms')})",
        f"pipeline/raw CPU a message, all processes: {cpu_ms(pipe):.3f} / {cpu_ms(raw):.3f} ms = "
        f"{r['cpu_ratio']}x; p99 at {pipe['latency_ms']['offered_per_s']}/s: "
        f"{pipe['latency_ms']['p99']} / {raw['latency_ms']['p99']} ms = {r['p99_ratio']}x",
        f"HTTP: achieved {http['achieved_per_s']}/s, errors {http['errors'] or 'none'}, "
        f"lost {http['lost']}; fan-out lost {fan['lost']}",
        *(f"CPU ms a message, {name}: " + ", ".join(
            f"{k} {v}" for k, v in r[stage]["cpu_ms_per_msg"].items())
          for name, stage in (("ceiling", "ceiling"), ("raw chain", "raw"),
                              ("FastStream chain", "framework"),
                              ("pipeline", "pipeline"))),
        "GC pauses in the pipeline's latency stage (collections, total ms, over 10 ms): "
        + ", ".join(f"{k} {v['collections']:.0f}/{v['total_ms']}/{v['over_10ms']:.0f}"
                    for k, v in pipe["latency_ms"].get("gc_pauses", {}).items()),
        f"where the pipeline's latency goes at {pipe['latency_ms']['offered_per_s']}/s "
        "(p50/p99 ms a hop, from record to record): " + ", ".join(
            f"{k} {v['p50']}/{v['p99']}" for k, v in pipe["latency_ms"].get("hops", {}).items()),
        "its batches (records a batch, mean ms a handler took with one, waits included): "
        + ", ".join(f"{k} {v['records_a_batch']}/{v['handler_ms']}"
                    for k, v in pipe["latency_ms"].get("batches", {}).items()),
        "where the fan-out's latency goes (p50/p99 ms a hop): " + ", ".join(
            f"{k} {v['p50']}/{v['p99']}" for k, v in fan["latency_ms"].get("hops", {}).items()),
        "peak RSS MB: " + ", ".join(f"{k} {v['peak_rss_mb']}" for k, v in r["memory_mb"].items())
        + "; relays " + ", ".join(f"{v['peak_rss_mb']}" for v in raw["memory_mb"].values()),
    ]
    if "long_replay" in r:
        lines.append(f"RSS growth over the long replay (MB): {r['long_replay']['rss_growth_mb']}")
    lines.append(f"load average at start/end: {r['machine']['load_avg_at_start']} / "
                 f"{r['machine'].get('load_avg_at_end')}  (other work on the machine skews this)")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["ceiling-sink"]:
        topic, prefix, count, out = sys.argv[2:6]
        asyncio.run(ceiling_sink(Settings(), topic, prefix, int(count), Path(out)))
    elif sys.argv[1:2] == ["ceiling-feed"]:
        topic, prefix, count, rate, out = sys.argv[2:7]
        asyncio.run(ceiling_feed(Settings(), topic, prefix, int(count), float(rate), Path(out)))
    elif sys.argv[1:2] in (["relay"], ["fsrelay"]):
        source, target, group = sys.argv[2:5]
        hop = relay if sys.argv[1] == "relay" else faststream_relay
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(hop(Settings(), source, target, group))
