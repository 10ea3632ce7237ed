"""Chaos in the scaled shape: two copies of every consuming service (validation, supplementation,
referral, retraction) in one consumer group each, on topics of 8 partitions, with their state on
the tests' 3-shard Valkey cluster (REDIS_CLUSTER=true). A replay runs while a random copy is
killed -9 and started again, over and over (each a rebalance in its group), and a shard primary
is killed -9 and started again 1-2 s later with the same config and data (its append-only file is
fsynced on every write; no replica takes over, a restart rather than a failover). Afterwards the
oracle's four counters must be 0, as in tests/chaos/test_chaos.py, whose helpers this shares
(tests/chaos/harness.py).

CI-sized: about 110 reports, bounded in count and time, loopback only. Intake (and the analyst
API it has beside supplementation's first copy) runs once and is not killed.
"""

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chaos import harness
from tipline.stack import CONSUMERS, Stack, spawn_valkey, start_services

# Part of every `make test` (about 90 s on two cores); TIPLINE_CHAOS_SCALED=0 leaves it out.
pytestmark = pytest.mark.skipif(
    os.environ.get("TIPLINE_CHAOS_SCALED") == "0",
    reason="the scaled chaos run is left out (TIPLINE_CHAOS_SCALED=0)")

REPORTS = 110
RATE = 12.0
PARTITIONS = 8
MIN_KILLS = 4
MIN_SHARD_RESTARTS = 1
COPIES = tuple(name for service in CONSUMERS for name in (service, f"{service}-2"))


@dataclass
class Scaled(harness.Faults):
    cluster: Stack = field(default_factory=lambda: Stack("", "", "", Path()))

    async def kill_a_copy(self) -> None:
        await self.kill_and_restart(self.rng.choice(COPIES))
        self.tally.rebalances += 2  # it leaves its group, and joins it again

    async def restart_shard(self) -> None:
        """SIGKILL one primary of the cluster; start it again with its config and data."""
        shards = sorted(c.name for c in self.cluster.children if c.name.startswith("valkey-"))
        name = self.rng.choice(shards)
        victim = next(c for c in self.cluster.children if c.name == name)
        victim.process.kill()  # no shutdown: what it acknowledged is in its fsynced AOF
        await asyncio.to_thread(victim.process.wait)
        self.cluster.children.remove(victim)
        self.tally.shard_restarts += 1
        await asyncio.sleep(self.rng.uniform(1.0, 2.0))
        await asyncio.to_thread(spawn_valkey, self.cluster, victim.name)

    async def run(self, until: asyncio.Event, budget_s: float) -> None:
        """Faults one after another until the replay has dispatched everything (bounded)."""
        deadline = time.monotonic() + budget_s
        await self.flowing(10)
        step = 0
        while ((not until.is_set() or sum(self.tally.kills.values()) < MIN_KILLS
                or self.tally.shard_restarts < MIN_SHARD_RESTARTS)
               and time.monotonic() < deadline):
            step += 1
            if step % 4 == 2:
                await self.restart_shard()
            else:
                await self.kill_a_copy()
            await self.flowing(self.rng.randint(5, 15))


def assignments(stack: Stack) -> dict[str, int]:
    """How many times each copy was handed partitions (aiokafka logs each new assignment): the
    rebalances the copies went through, as they saw them."""
    return {name: (stack.workdir / "logs" / f"{name}.log").read_text()
            .count("Setting newly assigned partitions") for name in COPIES}


@pytest.fixture
async def scaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, valkey_cluster: Stack
) -> AsyncIterator[Scaled]:
    monkeypatch.setenv("KAFKA_PARTITIONS", str(PARTITIONS))  # the topics and the services
    async with harness.pipeline_stack(
        tmp_path, monkeypatch, valkey_cluster.redis,
        redis_username=valkey_cluster.redis_username,
        redis_password=valkey_cluster.redis_password, redis_cluster=True,
    ) as stack:
        await asyncio.to_thread(start_services, stack, CONSUMERS, 2)
        # Every copy in its group before the faults begin: a copy killed before its first
        # assignment would never have shared its group's partitions (the check at the end).
        deadline = time.monotonic() + 60
        while not all(assignments(stack).values()):
            assert time.monotonic() < deadline, assignments(stack)
            await asyncio.sleep(0.2)
        yield Scaled(stack, stack.settings(), random.Random(8), cluster=valkey_cluster)


@pytest.mark.timeout(300)
async def test_the_oracle_finds_nothing_wrong_with_two_copies_on_a_cluster(
    scaled: Scaled,
) -> None:
    assert scaled.settings.kafka_partitions == PARTITIONS and scaled.settings.redis_cluster
    assert {c.name for c in scaled.stack.children} >= set(COPIES)
    result = await harness.replay_with(
        scaled, harness.stream_of(REPORTS, RATE), settle_timeout=150,
        run_faults=lambda dispatched: scaled.run(until=dispatched,
                                                 budget_s=(REPORTS / RATE) + 30))
    assigned = assignments(scaled.stack)
    harness.report(result, {**harness.summary(result, scaled.tally), "partitions": PARTITIONS,
                            "shard_restarts": scaled.tally.shard_restarts,
                            "assignments_seen": sum(assigned.values())},
                   label="scaled chaos tally")

    harness.assert_nothing_wrong(result, scaled, REPORTS)
    # While a shard restarts intake says "retry" (503), never "server error" (500).
    assert not [e for e in result["errors"] if "http 500" in e], result["errors"]
    assert sum(scaled.tally.kills.values()) >= MIN_KILLS
    assert scaled.tally.shard_restarts >= MIN_SHARD_RESTARTS
    # Both copies of every service really shared its group's partitions.
    assert all(assigned.values()), assigned
