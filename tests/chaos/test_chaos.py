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
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared import topics
from shared.analysts import AnalystDirectory
from shared.settings import Settings
from shared.store import connect
from tipline.esps import dev_logins
from tipline.generate import Mix, events
from tipline.replay import Replay, render
from tipline.stack import (
    PIPELINE,
    Child,
    Stack,
    create_topics,
    free_port,
    routing,
    start_servers,
    start_services,
    valkey_binary,
    wait_for_port,
)

LONG = os.environ.get("TIPLINE_CHAOS_LONG") == "1"
REPORTS = 1200 if LONG else 160
RATE = 15.0 if LONG else 12.0
MIN_KILLS = 12 if LONG else 3
KILLABLE = ("validation", "supplementation", "referral", "retraction")
CONSUMED = (topics.REPORTS_SUBMITTED, topics.REPORTS_VALIDATED, topics.REPORTS_SUPPLEMENTED,
            topics.RETRACTIONS_REQUESTED)
POISON_AGENCY = "icac-ca"
ABANDON_AFTER_S = "4"  # intake abandons an unfinished report this soon (24 h by default)
ANALYST = ("chaos-analyst", "synthetic-analyst-password")


@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    redis_outages: int = 0
    rebalances: int = 0
    poison: list[tuple[str, str]] = field(default_factory=list)  # (topic, marker)
    poison_to_agency: int = 0


@dataclass
class Chaos:
    stack: Stack
    settings: Settings
    valkey_port: int
    valkey_dir: Path
    rng: random.Random
    tally: Tally = field(default_factory=Tally)

    def service_env(self, name: str, copy: bool = False) -> dict[str, str]:
        analyst = self.stack.analyst.rsplit(":", 1)[1]
        return {**self.stack.env(), "OTEL_SERVICE_NAME": name, "TIPLINE_OPS_PORT": "0",
                "TIPLINE_KEYS_DIR": str(self.stack.workdir / "keys"),
                "TIPLINE_ROUTING_FILE": str(routing(self.stack)),
                # A second copy serves no analyst API: the port is the first one's.
                "TIPLINE_ANALYST_PORT": "0" if copy else analyst,
                "TIPLINE_RETRY_BACKOFF_S": "0.2"}

    def spawn_service(self, name: str, as_name: str | None = None) -> Child:
        return self.stack.spawn(as_name or name, [sys.executable, "-m", f"services.{name}"],
                                env=self.service_env(name, copy=as_name is not None))

    def find(self, name: str) -> Child:
        return next(c for c in self.stack.children if c.name == name)

    async def kill_and_restart(self, name: str) -> None:
        child = self.find(name)
        child.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.process.wait)
        self.stack.children.remove(child)
        self.tally.kills[name] += 1
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        self.spawn_service(name)

    async def redis_outage(self, seconds: float) -> None:
        valkey = self.find("valkey")
        valkey.process.send_signal(signal.SIGTERM)  # AOF is fsynced on every write
        await asyncio.to_thread(valkey.process.wait)
        self.stack.children.remove(valkey)
        self.tally.redis_outages += 1
        await asyncio.sleep(seconds)
        spawn_valkey(self.stack, self.valkey_port, self.valkey_dir)
        await asyncio.to_thread(wait_for_port, "127.0.0.1", self.valkey_port)

    async def rebalance(self, name: str, seconds: float) -> None:
        """One more copy joins the group, works a while, then leaves (gracefully or not)."""
        copy = self.spawn_service(name, as_name=f"{name}-copy")
        self.tally.rebalances += 1
        await asyncio.sleep(seconds)
        copy.process.send_signal(self.rng.choice([signal.SIGTERM, signal.SIGKILL]))
        await asyncio.to_thread(copy.process.wait)
        self.stack.children.remove(copy)
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
        await asyncio.sleep(2.0)
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
            await asyncio.sleep(self.rng.uniform(1.0, 2.5))
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
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # a broker of its own
    valkey_port = free_port()
    redis_url = f"redis://127.0.0.1:{valkey_port}/0"
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TIPLINE_RETRY_BACKOFF_S", "0.2")
    monkeypatch.setenv("TIPLINE_ABANDON_AFTER_OPEN_S", ABANDON_AFTER_S)
    monkeypatch.setenv("TIPLINE_ABANDON_AFTER_CHANGE_S", ABANDON_AFTER_S)
    monkeypatch.setenv("TIPLINE_ABANDON_TICK_S", "0.5")
    stack = Stack(kafka="", redis=redis_url, http=f"http://127.0.0.1:{free_port()}",
                  workdir=tmp_path, analyst=f"http://127.0.0.1:{free_port()}")
    valkey_dir = tmp_path / "valkey"
    valkey_dir.mkdir()
    try:
        spawn_valkey(stack, valkey_port, valkey_dir)
        wait_for_port("127.0.0.1", valkey_port)
        start_servers(stack)  # the broker only: REDIS_URL is set
        await asyncio.to_thread(create_topics, stack)
        await asyncio.to_thread(start_services, stack, PIPELINE)
        settings = Settings(kafka_bootstrap_servers=stack.kafka, redis_url=redis_url)
        yield Chaos(stack, settings, valkey_port, valkey_dir, random.Random(6))
    finally:
        await asyncio.to_thread(stack.stop, 10.0)


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


async def add_analyst(settings: Settings) -> None:
    redis = connect(settings)
    try:
        await AnalystDirectory(redis).add(*ANALYST)
    finally:
        await redis.aclose()


@pytest.mark.timeout(1200 if LONG else 300)
async def test_the_oracle_finds_nothing_wrong_through_chaos(chaos: Chaos) -> None:
    mix = Mix(invalid=0.1, duplicate=0.05, abandoned=0.04, withheld=0.03, retract_before=0.1,
              retract_after=0.1, amend=0.06)
    stream = list(events(REPORTS, seed=42, rate=RATE, mix=mix))
    played = {(e["action"], e["expect"]) for e in stream}
    assert {("amend", "amended"), ("open", "abandoned"), ("open", "withheld"),
            ("retract", "retracted_after_referral"), ("submit", "invalid")} <= played
    esps = sorted({e["esp_id"] for e in stream if e.get("actor") == "esp"})
    logins = await dev_logins(chaos.settings, esps, chaos.stack.workdir)
    await add_analyst(chaos.settings)
    replay = Replay(chaos.settings, chaos.stack.http, logins, concurrency=32, retry_for=60,
                    after_referral_timeout=90, analyst=ANALYST,
                    analyst_url=chaos.stack.analyst)
    dispatched = asyncio.Event()
    # Non-notices sent to an agency topic while the replay still watched it: the last round of
    # poison goes out when the replay has finished if it settles within the fault budget.
    watched_agency_poison = 0

    async def run_replay() -> dict[str, Any]:
        nonlocal watched_agency_poison
        try:
            return await replay.run(stream, rate="recorded", settle_timeout=300 if LONG else 150)
        finally:
            watched_agency_poison = chaos.tally.poison_to_agency
            dispatched.set()

    replay_task = asyncio.create_task(run_replay())
    await chaos.run(until=dispatched, budget_s=(REPORTS / RATE) + 20)
    result = await replay_task
    by_marker = await dead_letters(chaos.settings, chaos.tally.poison)
    unlettered = [m for _, m in chaos.tally.poison if m not in by_marker]
    judged = result["oracle"]
    tally = {
        "events": result["stream_events"],
        "sent": result["sent"],
        "accepted": result["accepted"],
        "outcomes": result["outcomes"],
        "kills": dict(chaos.tally.kills),
        "redis_outages": chaos.tally.redis_outages,
        "rebalances": chaos.tally.rebalances,
        "poison_sent": len(chaos.tally.poison) + chaos.tally.poison_to_agency,
        "poison_dead_lettered": len(by_marker),
        "poison_refused_by_agency_watch": result["notices"]["not_notices"],
        "redeliveries_absorbed": result["notices"]["redeliveries_absorbed"],
        **{c: judged[c] for c in ("lost", "duplicated", "misrouted", "out_of_order")},
    }
    print("\n" + render(result))
    print("chaos tally " + json.dumps(tally))

    assert result["settled"], f"the system did not quiesce: {result['undecided']}"
    assert (judged["lost"], judged["duplicated"], judged["misrouted"],
            judged["out_of_order"]) == (0, 0, 0, 0), judged["examples"]
    assert result["notices"]["of_other_reports"] == 0
    assert result["abandonment_not_due"] == 0
    assert sum(chaos.tally.kills.values()) >= MIN_KILLS
    assert not unlettered, f"poison never reached the dead-letter topic: {unlettered}"
    for letter in by_marker.values():
        assert letter["error"] and letter["service"] and letter["offset"] >= 0
    assert result["notices"]["not_notices"] >= watched_agency_poison
    outcomes = result["outcomes"]
    assert outcomes.get("referred", 0) > REPORTS // 2
    for played_out in ("retracted after referral", "amended", "abandoned", "withheld"):
        assert outcomes.get(played_out, 0) > 0, outcomes
    # No service died on its own: every exit was one this test caused.
    assert not [c.name for c in chaos.stack.children if c.process.poll() is not None]
