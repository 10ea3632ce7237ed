"""Chaos on Apache Kafka, secured as `tipline up --kafka apache` runs it (tests/apache_support.py),
with the pipeline in transactions (KAFKA_TRANSACTIONS): a replay runs while faults run, and the
oracle (tipline/oracle.py) must count 0 lost, 0 duplicated, 0 misrouted and 0 out of order.

- **Each notice once.** Referral and retraction are killed -9 the moment they publish: a reader of
  uncommitted records sees each new notice on an agency topic as the broker takes it, before its
  transaction commits, and kills its sender then; the copy started in its place fences the open
  transaction. The agencies' view reads committed records only, and must see no notice twice:
  not one copy, not just none after dedupe.
- **Broker failures.** Three nodes, replication factor 3, min.insync.replicas 2, producers with
  acks=all and idempotence: the node that leads most of the pipeline's partitions is killed -9 in
  the middle of the load and started again, then all three are restarted one after another. The
  four counters must be 0; copies of a notice (its id twice) are counted and printed.

Bounded in count and time; everything listens on loopback.
"""

import asyncio
import contextlib
import dataclasses
import json
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared import topics
from shared.agencies import load_agencies
from shared.kafka import kafka_client_options, topic_partitions
from tests.apache_support import ApacheKafka
from tests.chaos import harness
from tests.chaos.test_chaos import spawn_valkey
from tipline.stack import PIPELINE, Stack, free_port, start_services, wait_for_port
from tipline.watch import Tail

REPORTS = 100
RATE = 8.0
# More retractions after referral than the other chaos tests play: corrections to kill on.
MIX = dataclasses.replace(harness.MIX, retract_after=0.25)
# Kills of each sender, at least. Retraction is killed only at a correction, and corrections can
# come in one burst: when referral's kills bunch its deliveries, the retractions that follow them
# bunch too and retraction publishes all their corrections in one transaction (one CI run: 17
# corrections, one kill). Referral publishes all through the stream.
KILLS_AT_LEAST = {"referral": 2, "retraction": 1}
# Who publishes each kind of notice (a correction owed after a referral is referral's, but most
# are retraction's: killing retraction for one is a kill at a publish all the same).
SENDER_OF = {"referral": "referral", "amendment": "referral", "correction": "retraction"}


@dataclass
class OnOutput(harness.Faults):
    """Kills a notice's sender as soon as its notice reaches the broker."""

    cooldown_s: float = 3.0
    # Kills of each sender at most: waiting for retraction's, referral went on being killed
    # (7 times at load 14) and nothing after referral flowed for minutes.
    most: int = 4
    restarting: set[str] = field(default_factory=set)
    last_kill: dict[str, float] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)  # notices seen uncommitted, by kind

    def on_notice(self, kind: str) -> None:
        self.seen[kind] += 1
        victim = SENDER_OF.get(kind)
        if victim is None or victim in self.restarting or self.tally.kills[victim] >= self.most:
            return
        if time.monotonic() - self.last_kill.get(victim, 0.0) < self.cooldown_s:
            return
        child = self.find(victim)
        child.process.send_signal(signal.SIGKILL)  # now, not after a turn of the loop
        self.restarting.add(victim)
        self.last_kill[victim] = time.monotonic()
        self.tally.kills[victim] += 1
        self.tasks.append(asyncio.create_task(self._restart(victim)))

    async def _restart(self, name: str) -> None:
        child = self.find(name)
        await asyncio.to_thread(child.process.wait)
        self.stack.children.remove(child)
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        self.spawn_service(name, as_name=name)
        self.restarting.discard(name)


class Uncommitted(Tail):
    """Every record on the agency topics as the broker takes it, committed or not."""

    def __init__(self, faults: OnOutput, agencies: list[str]) -> None:
        super().__init__(faults.settings, [topics.agency_topic(a) for a in agencies],
                         isolation_level="read_uncommitted")
        self.faults = faults

    def took(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]],
             arrived: float) -> None:
        for record in records:
            kind = _kind(record.value)
            if kind:
                self.faults.on_notice(kind)


def enough_kills(faults: harness.Faults) -> bool:
    return all(faults.tally.kills[s] >= n for s, n in KILLS_AT_LEAST.items())


def _kind(value: bytes | None) -> str | None:
    """A notice's kind, or None for a record that is no notice."""
    try:
        notice = json.loads(value or b"")
        return str(notice["kind"]) if "notice_id" in notice else None
    except (ValueError, KeyError, TypeError):
        return None


async def copies_on_the_topics(faults: harness.Faults) -> Counter[str]:
    """Each notice that stands more than once in the agencies' committed records, read from the
    start: a copy an agency reads, whatever any watcher saw. By kind."""
    agencies = sorted(load_agencies(faults.settings.tipline_routing_file))
    partitions = await topic_partitions(faults.settings,
                                        [topics.agency_topic(a) for a in agencies])
    consumer = AIOKafkaConsumer(**kafka_client_options(faults.settings), group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    seen: Counter[tuple[str, str]] = Counter()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)  # the last stable offsets: all committed
        deadline = time.monotonic() + 60
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, "the agencies' topics were not read to the end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    kind = _kind(record.value)  # other tests' records on a shared broker: None
                    if kind is not None:
                        seen[(kind, json.loads(record.value)["notice_id"])] += 1
    finally:
        await consumer.stop()
    return Counter(kind for (kind, _), n in seen.items() for _ in range(n - 1))


@contextlib.asynccontextmanager
async def pipeline_on(kafka: ApacheKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      ) -> AsyncIterator[Stack]:
    """The pipeline's services on this Apache Kafka, each logged in as itself, with a Valkey of
    the test's own, in the chaos environment; all stopped afterwards."""
    harness.chaos_env(monkeypatch)
    port = free_port()
    valkey_dir = tmp_path / "valkey"
    valkey_dir.mkdir()
    stack = Stack(kafka=kafka.bootstrap, redis=f"redis://127.0.0.1:{port}/0",
                  http=f"http://127.0.0.1:{free_port()}", workdir=tmp_path,
                  analyst=f"http://127.0.0.1:{free_port()}",
                  kafka_env=kafka.stack.kafka_env, admin_env=kafka.stack.admin_env,
                  service_env={s: dict(e) for s, e in kafka.stack.service_env.items()})
    try:
        spawn_valkey(stack, port, valkey_dir)
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port)
        await asyncio.to_thread(start_services, stack, PIPELINE)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop, 20.0)


@pytest.fixture
async def on_output(apache: ApacheKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    ) -> AsyncIterator[OnOutput]:
    async with pipeline_on(apache, tmp_path, monkeypatch) as stack:
        yield OnOutput(stack, stack.settings(), random.Random(25))


@pytest.mark.timeout(420)
async def test_each_notice_reaches_its_agency_once_though_its_sender_dies_as_it_publishes(
    on_output: OnOutput,
) -> None:
    faults = on_output
    agencies = sorted(load_agencies(faults.settings.tipline_routing_file))
    trigger = Uncommitted(faults, agencies)

    async def kill_on_output(dispatched: asyncio.Event) -> None:
        await trigger.start()
        try:
            # Corrections follow referrals, which a loaded machine delays (a minute at load 20):
            # the watch lasts until both senders have been killed enough, within the bound.
            deadline = time.monotonic() + REPORTS / RATE + 180
            while ((not dispatched.is_set() or not enough_kills(faults))
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.2)
        finally:
            await trigger.stop()
        await asyncio.gather(*faults.tasks)

    stream = harness.stream_of(REPORTS, RATE, MIX)
    result = await harness.replay_with(faults, stream, settle_timeout=180,
                                       run_faults=kill_on_output)
    copies = result["notices"]["redeliveries_absorbed"]
    on_topics = await copies_on_the_topics(faults)
    harness.report(result, {**harness.summary(result, faults.tally),
                            "copies_read_committed": copies,
                            "copies_on_the_topics": dict(on_topics),
                            "notices_seen_uncommitted": dict(faults.seen)},
                   label="kill-on-output tally")
    harness.assert_nothing_wrong(result, faults, REPORTS)
    assert enough_kills(faults), faults.tally.kills
    assert copies == 0 and not on_topics, f"agencies read notices twice: {on_topics}"


BROKER_REPORTS = 160
BROKER_RATE = 4.0  # the load lasts through the kill and the rolling restart (about 40 s)
CAUGHT_UP_S = 120.0  # a restarted node back in sync, at most


@dataclass
class BrokerFaults(harness.Faults):
    kafka: ApacheKafka | None = None
    broker_kills: int = 0
    broker_restarts: int = 0

    def busiest(self) -> int:
        """The node that leads most of the pipeline's and the agencies' partitions."""
        assert self.kafka is not None
        agencies = load_agencies(self.settings.tipline_routing_file)
        leaders = self.kafka.leaders(
            [*topics.PIPELINE_TOPICS, *(topics.agency_topic(a) for a in agencies)])
        return Counter(leaders.values()).most_common(1)[0][0]

    async def restart(self, node_id: int, sig: int) -> None:
        assert self.kafka is not None
        await asyncio.to_thread(self.kafka.kill, node_id, sig)
        self.broker_kills += sig == signal.SIGKILL
        await asyncio.sleep(self.rng.uniform(3.0, 6.0))
        await asyncio.to_thread(self.kafka.restart, node_id)
        self.broker_restarts += 1

    async def caught_up(self) -> None:
        """Until every partition has all its replicas in sync again (the restarted node caught
        up: what a rolling restart waits for before the next node), then the pipeline moves."""
        assert self.kafka is not None
        deadline = time.monotonic() + CAUGHT_UP_S
        while lagging := await asyncio.to_thread(self.kafka.under_replicated):
            assert time.monotonic() < deadline, f"not back in sync after {CAUGHT_UP_S} s: {lagging}"
            await asyncio.sleep(0.2)
        await self.flowing(20)

    async def run(self, dispatched: asyncio.Event) -> None:
        """kill -9 the busiest node in the middle of the load and start it again, then restart
        all three one after another, each once the last one caught up."""
        await self.flowing(30)
        await self.restart(await asyncio.to_thread(self.busiest), signal.SIGKILL)
        await self.caught_up()
        for node_id in (1, 2, 3):
            await self.restart(node_id, signal.SIGTERM)
            await self.caught_up()


@pytest.fixture
async def broker_faults(apache_cluster: ApacheKafka, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BrokerFaults]:
    async with pipeline_on(apache_cluster, tmp_path, monkeypatch) as stack:
        yield BrokerFaults(stack, stack.settings(), random.Random(9), kafka=apache_cluster)


@pytest.mark.timeout(600)
async def test_the_pipeline_loses_nothing_when_brokers_fail(broker_faults: BrokerFaults) -> None:
    faults = broker_faults
    stream = harness.stream_of(BROKER_REPORTS, BROKER_RATE)
    result = await harness.replay_with(faults, stream, settle_timeout=240, run_faults=faults.run)
    copies = result["notices"]["redeliveries_absorbed"]
    on_topics = await copies_on_the_topics(faults)
    harness.report(result, {**harness.summary(result, faults.tally),
                            "broker_kills": faults.broker_kills,
                            "broker_restarts": faults.broker_restarts,
                            "notices": result["notices"]["distinct"],
                            "copies_read_committed": copies,
                            "copies_on_the_topics": dict(on_topics)},
                   label="broker-failure tally")
    harness.assert_nothing_wrong(result, faults, BROKER_REPORTS)
    assert (faults.broker_kills, faults.broker_restarts) == (1, 4)
    # Copies (the same notice id twice) are counted, not failed: while a broker fails over,
    # intake's outbox sends again a step whose first send timed out, and an analyst's request
    # that timed out is made again (at least once, upstream of the transactions); a referral or
    # an amendment of the repeat can go out before the first one's is confirmed. Agencies drop
    # them by notice id (docs/load-testing.md has the figures).
