"""Chaos: a replay runs while services are killed, Redis goes away, groups rebalance and poison
arrives on every topic; afterwards the oracle (tipline/oracle.py) judges what agencies got
against what the stream itself says must come of each report: lost, duplicated, misrouted and
out-of-order notices must all be 0. The stream holds /v1 reports (valid, invalid, duplicate
uploads, retracted before and after referral), analyst amendments, and /ispws reports abandoned
(intake's deadline is shortened here) or cancelled before finish (withheld).

CI-sized by default (about two minutes on two cores); TIPLINE_CHAOS_LONG=1 runs a longer,
harder round. Everything listens on loopback; every loop is bounded in count and time.
The embedded broker keeps its data in memory only, so the broker itself is never killed; and
intake is not killed (a JSON-API call cut mid-request leaves the client unsure whether its report
was accepted: that is the /ispws Idempotency-Key's job, not this test's).
"""

import asyncio
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared import topics
from shared.settings import Settings
from tests.chaos import harness
from tipline.stack import (
    CONSUMERS,
    Child,
    Stack,
    copy_name,
    free_port,
    valkey_binary,
    wait_for_port,
)

LONG = os.environ.get("TIPLINE_CHAOS_LONG") == "1"
REPORTS = 1200 if LONG else 160
RATE = 15.0 if LONG else 12.0
MIN_KILLS = 12 if LONG else 3
KILLABLE = CONSUMERS
CONSUMED = (topics.REPORTS_SUBMITTED, topics.REPORTS_VALIDATED, topics.REPORTS_SUPPLEMENTED,
            topics.RETRACTIONS_REQUESTED)
POISON_AGENCY = "icac-ca"


@dataclass
class Chaos(harness.Faults):
    valkey_port: int = 0
    valkey_dir: Path = Path()

    async def redis_outage(self, seconds: float) -> None:
        await self.kill(self.find("valkey"), signal.SIGTERM)  # AOF is fsynced on every write
        self.tally.redis_outages += 1
        await asyncio.sleep(seconds)
        spawn_valkey(self.stack, self.valkey_port, self.valkey_dir)
        await asyncio.to_thread(wait_for_port, "127.0.0.1", self.valkey_port)

    async def rebalance(self, name: str, seconds: float) -> None:
        """One more copy joins the group, works a while, then leaves (gracefully or not)."""
        copy = self.spawn_service(name, as_name=copy_name(name, 9))
        self.tally.rebalances += 1
        await asyncio.sleep(seconds)
        await self.kill(copy, self.rng.choice([signal.SIGTERM, signal.SIGKILL]))
        self.tally.rebalances += 1

    async def poison(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                    max_request_size=self.settings.kafka_max_message_bytes)
        await producer.start()
        try:
            for topic in CONSUMED:
                n = len(self.tally.poison)
                cases = {
                    f"poison-{n}-badjson": lambda m: f"{m} {{not json".encode(),
                    f"poison-{n}-schema": lambda m: json.dumps({"marker": m, "x": 1}).encode(),
                    f"poison-{n}-oversized": lambda m: (m + " " + "z" * 1_500_000).encode(),
                }
                for marker, make in cases.items():
                    await producer.send_and_wait(topic, make(marker), key=marker.encode())
                    self.tally.poison.append((topic, marker))
            await producer.send_and_wait(topics.agency_topic(POISON_AGENCY), b"{not a notice",
                                         key=b"poison-agency")
            self.tally.poison_to_agency += 1
        finally:
            await producer.stop()

    async def run(self, until: asyncio.Event, budget_s: float) -> None:
        """Faults one after another until the replay has dispatched everything (bounded)."""
        deadline = time.monotonic() + budget_s
        await self.flowing(10)
        await self.poison()
        step = 0
        while ((not until.is_set() or sum(self.tally.kills.values()) < MIN_KILLS)
               and time.monotonic() < deadline):
            step += 1
            if step % 5 == 2:
                await self.redis_outage(self.rng.uniform(1.5, 3.0))
            elif step % 5 == 4:
                await self.rebalance(self.rng.choice(KILLABLE), self.rng.uniform(2.0, 4.0))
            else:
                await self.kill_and_restart(self.rng.choice(KILLABLE))
            await self.flowing(self.rng.randint(5, 15))
        if self.tally.redis_outages == 0:
            await self.redis_outage(2.0)
        await self.poison()  # and once more near the end: the pipeline must still flow after


def spawn_valkey(stack: Stack, port: int, data: Path) -> Child:
    return stack.spawn("valkey", [
        str(valkey_binary()), "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
        "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data),
    ], env={"PATH": os.environ.get("PATH", "")})


@pytest.fixture
async def chaos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Chaos]:
    valkey_port = free_port()
    redis_url = f"redis://127.0.0.1:{valkey_port}/0"
    valkey_dir = tmp_path / "valkey"
    valkey_dir.mkdir()

    def valkey(stack: Stack) -> None:  # the stack's own, so the test may stop and start it
        spawn_valkey(stack, valkey_port, valkey_dir)
        wait_for_port("127.0.0.1", valkey_port)

    async with harness.pipeline_stack(tmp_path, monkeypatch, redis_url, valkey) as stack:
        settings = Settings(kafka_bootstrap_servers=stack.kafka, redis_url=redis_url)
        yield Chaos(stack, settings, random.Random(6), valkey_port=valkey_port,
                    valkey_dir=valkey_dir)


async def dead_letters(
    settings: Settings, wanted: list[tuple[str, str]], timeout_s: float = 60.0
) -> dict[str, dict[str, Any]]:
    """The dead letter of each poison message (topic, marker), waiting for them (bounded)."""
    consumer = AIOKafkaConsumer(topics.DEAD_LETTERS,
                                bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    found: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    letter = json.loads(record.value)
                    for topic, marker in wanted:
                        if marker in letter.get("value", "")[:200] and letter["topic"] == topic:
                            found[marker] = letter
    finally:
        await consumer.stop()
    return found


@pytest.mark.timeout(1200 if LONG else 300)
async def test_the_oracle_finds_nothing_wrong_through_chaos(chaos: Chaos) -> None:
    stream = harness.stream_of(REPORTS, RATE)
    result = await harness.replay_with(
        chaos, stream, settle_timeout=300 if LONG else 150,
        run_faults=lambda dispatched: chaos.run(until=dispatched,
                                                budget_s=(REPORTS / RATE) + 20))
    by_marker = await dead_letters(chaos.settings, chaos.tally.poison)
    unlettered = [m for _, m in chaos.tally.poison if m not in by_marker]
    harness.report(result, {
        **harness.summary(result, chaos.tally),
        "redis_outages": chaos.tally.redis_outages,
        "poison_sent": len(chaos.tally.poison) + chaos.tally.poison_to_agency,
        "poison_dead_lettered": len(by_marker),
        "poison_refused_by_agency_watch": result["notices"]["not_notices"],
    })

    harness.assert_nothing_wrong(result, chaos, REPORTS)
    assert sum(chaos.tally.kills.values()) >= MIN_KILLS
    assert not unlettered, f"poison never reached the dead-letter topic: {unlettered}"
    for letter in by_marker.values():
        assert letter["error"] and letter["service"] and letter["offset"] >= 0
    assert result["notices"]["not_notices"] >= chaos.tally.poison_to_agency_watched
