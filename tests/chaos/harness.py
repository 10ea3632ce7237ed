"""What the chaos tests share: the stack they start and the environment it runs in, killing and
restarting service processes (first copies and further ones), the generated stream and its
replay while faults run, and the verdict (the oracle's four counters 0, no notice of an unknown
report, no service dead on its own)."""

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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
    instance_of,
    routing,
    service_of,
    start_servers,
    start_services,
)

ABANDON_AFTER_S = "4"  # intake abandons an unfinished report this soon (24 h by default)
ANALYST = ("chaos-analyst", "synthetic-analyst-password")
MIX = Mix(invalid=0.1, duplicate=0.05, abandoned=0.04, withheld=0.03, retract_before=0.1,
          retract_after=0.1, amend=0.06)
COUNTERS = ("lost", "duplicated", "misrouted", "out_of_order")
# How long a fault waits at most for the pipeline to move before the next one: near the stream's
# end no more notices come.
FLOW_WITHIN_S = 5.0


def chaos_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short retry backoff, intake's abandonment deadline cut to seconds."""
    monkeypatch.setenv("TIPLINE_RETRY_BACKOFF_S", "0.2")
    monkeypatch.setenv("TIPLINE_ABANDON_AFTER_OPEN_S", ABANDON_AFTER_S)
    monkeypatch.setenv("TIPLINE_ABANDON_AFTER_CHANGE_S", ABANDON_AFTER_S)
    monkeypatch.setenv("TIPLINE_ABANDON_TICK_S", "0.5")


@contextlib.asynccontextmanager
async def pipeline_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis: str,
    before: Callable[[Stack], None] = lambda stack: None, **options: Any,
) -> AsyncIterator[Stack]:
    """A broker of the test's own and the pipeline's services (no console) on `redis`, in the
    chaos environment, all stopped afterwards; `before(stack)` runs first (to start a Valkey
    the stack owns). `options`: more of the Stack's fields."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # a broker of its own
    monkeypatch.setenv("REDIS_URL", redis)  # so start_servers starts the broker only
    chaos_env(monkeypatch)
    stack = Stack(kafka="", redis=redis, http=f"http://127.0.0.1:{free_port()}",
                  workdir=tmp_path, analyst=f"http://127.0.0.1:{free_port()}", **options)
    try:
        await asyncio.to_thread(before, stack)
        await asyncio.to_thread(start_servers, stack)
        await asyncio.to_thread(create_topics, stack)
        await asyncio.to_thread(start_services, stack, PIPELINE)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop, 10.0)


@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    redis_outages: int = 0
    shard_restarts: int = 0
    rebalances: int = 0  # group membership changes this test caused
    poison: list[tuple[str, str]] = field(default_factory=list)  # (topic, marker)
    poison_to_agency: int = 0
    # Non-notices sent to an agency topic while the replay still watched it.
    poison_to_agency_watched: int = 0


@dataclass
class Faults:
    """The stack under test and what was done to it."""

    stack: Stack
    settings: Settings
    rng: random.Random
    tally: Tally = field(default_factory=Tally)
    replay: Replay | None = None  # the load the faults run in (replay_with sets it)

    async def flowing(self, notices: int) -> None:
        """Until the replay's agencies have seen `notices` more notices: the pipeline moves, so
        the next fault lands in work in flight, on a fast machine or a slow one (a pause of
        wall-clock time could end before the load began, or inside a stall). At most
        FLOW_WITHIN_S."""
        assert self.replay is not None, "faults pace themselves by a replay's notices"
        wanted = self.replay.watch.received + notices
        deadline = time.monotonic() + FLOW_WITHIN_S
        while self.replay.watch.received < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def service_env(self, name: str, as_name: str, copy: bool = False) -> dict[str, str]:
        analyst = self.stack.analyst.rsplit(":", 1)[1]
        return {**self.stack.env(), **self.stack.service_env.get(name, {}),
                "OTEL_SERVICE_NAME": name, "TIPLINE_OPS_PORT": "0",
                "TIPLINE_INSTANCE": instance_of(as_name),
                "TIPLINE_KEYS_DIR": str(self.stack.workdir / "keys"),
                "TIPLINE_ROUTING_FILE": str(routing(self.stack)),
                # A second copy serves no analyst API: the port is the first one's.
                "TIPLINE_ANALYST_PORT": "0" if copy else analyst,
                "TIPLINE_RETRY_BACKOFF_S": "0.2"}

    def spawn_service(self, name: str, as_name: str | None = None) -> Child:
        copy = as_name is not None and as_name != name
        return self.stack.spawn(as_name or name, [sys.executable, "-m", f"services.{name}"],
                                env=self.service_env(name, as_name or name, copy=copy))

    def find(self, name: str) -> Child:
        return next(c for c in self.stack.children if c.name == name)

    async def kill(self, child: Child, sig: int = signal.SIGKILL) -> None:
        child.process.send_signal(sig)
        await asyncio.to_thread(child.process.wait)
        self.stack.children.remove(child)

    async def kill_and_restart(self, name: str) -> None:
        """kill -9 the child `name` (a service or a copy of one), then start it again."""
        await self.kill(self.find(name))
        self.tally.kills[name] += 1
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        self.spawn_service(service_of(name), as_name=name)

    def dead(self) -> list[str]:
        """Children that exited without this test's doing."""
        return self.stack.check()


def stream_of(reports: int, rate: float, mix: Mix = MIX) -> list[dict[str, Any]]:
    """A generated version 2 stream that plays every kind of report."""
    stream = list(events(reports, seed=42, rate=rate, mix=mix))
    played = {(e["action"], e["expect"]) for e in stream}
    assert {("amend", "amended"), ("open", "abandoned"), ("open", "withheld"),
            ("retract", "retracted_after_referral"), ("submit", "invalid")} <= played
    return stream


async def replay_with(
    faults: Faults, stream: list[dict[str, Any]], settle_timeout: float,
    run_faults: Callable[[asyncio.Event], Awaitable[None]],
) -> dict[str, Any]:
    """Replay `stream` (recorded pace) while `run_faults(dispatched)` runs; the replay's result."""
    esps = sorted({e["esp_id"] for e in stream if e.get("actor") == "esp"})
    logins = await dev_logins(faults.settings, esps, faults.stack.workdir)
    redis = connect(faults.settings)
    try:
        await AnalystDirectory(redis).add(*ANALYST)
    finally:
        await redis.aclose()
    replay = Replay(faults.settings, faults.stack.http, logins, concurrency=32, retry_for=60,
                    after_referral_timeout=90, analyst=ANALYST, analyst_url=faults.stack.analyst)
    faults.replay = replay
    dispatched = asyncio.Event()

    async def run_replay() -> dict[str, Any]:
        try:
            return await replay.run(stream, rate="recorded", settle_timeout=settle_timeout)
        finally:
            faults.tally.poison_to_agency_watched = faults.tally.poison_to_agency
            dispatched.set()

    replay_task = asyncio.create_task(run_replay())
    try:
        await run_faults(dispatched)
    except BaseException:
        replay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await replay_task
        raise
    return await replay_task


def summary(result: dict[str, Any], tally: Tally) -> dict[str, Any]:
    """The tally line's common part: what was played, the faults, the four counters."""
    return {
        "events": result["stream_events"], "sent": result["sent"],
        "accepted": result["accepted"], "outcomes": result["outcomes"],
        "kills": dict(tally.kills), "rebalances": tally.rebalances,
        "redeliveries_absorbed": result["notices"]["redeliveries_absorbed"],
        **{c: result["oracle"][c] for c in COUNTERS},
        "refused_without_cause": result["refusals"]["without_cause"],
    }


def report(result: dict[str, Any], tally: dict[str, Any], label: str = "chaos tally") -> None:
    print("\n" + render(result))
    print(f"{label} " + json.dumps(tally))


def assert_nothing_wrong(result: dict[str, Any], faults: Faults, reports: int) -> None:
    judged = result["oracle"]
    assert result["settled"], f"the system did not quiesce: {result['undecided']}"
    assert tuple(judged[c] for c in COUNTERS) == (0, 0, 0, 0), judged["examples"]
    assert result["notices"]["of_other_reports"] == 0
    assert result["abandonment_not_due"] == 0
    # A refusal (4xx) of what the stream says must be accepted, unexplained by the report's
    # state: a transient fault answered as if for good (an ESP gives up on it).
    assert result["refusals"]["without_cause"] == 0, result["refusals"]["examples"]
    outcomes = result["outcomes"]
    assert outcomes.get("referred", 0) > reports // 2
    for played_out in ("retracted after referral", "amended", "abandoned", "withheld"):
        assert outcomes.get(played_out, 0) > 0, outcomes
    # No service died on its own: every exit was one this test caused.
    assert not faults.dead()
