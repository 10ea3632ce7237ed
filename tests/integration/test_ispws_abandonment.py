"""Abandonment on real Redis and the real broker: late calls refused, the sweep retracts once
(its RetractReport out through intake's outbox), a racing step wins."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.intake.abandonment import CREATION_GRACE_S, DEADLINES, Abandonment
from services.intake.drafts import Drafts
from services.intake.esps import EspRegistry
from services.intake.main import create_app
from shared import topics
from shared.schedule import DueIndex
from shared.settings import Settings
from tests.clock import ManualClock
from tests.integration.agency_helpers import read_topic
from tests.ispws_support import code, field, report_xml

WINDOW = 1.0
XML = {"content-type": "text/xml"}


@pytest.fixture(scope="module")
def short(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings.model_copy(update={
        "tipline_files_dir": tmp_path_factory.mktemp("files"),
        "tipline_abandon_after_open_s": WINDOW, "tipline_abandon_after_change_s": WINDOW,
        "tipline_abandon_tick_s": 3600.0,  # the tests sweep themselves
    })


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    """Intake's time: the tests move it past a deadline instead of waiting for it."""
    return ManualClock()


@pytest.fixture(scope="module")
async def app(short: Settings, clock: ManualClock) -> AsyncIterator[FastAPI]:
    app = create_app(short, clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def http(app: FastAPI, short: Settings) -> AsyncIterator[httpx.AsyncClient]:
    redis = Redis.from_url(short.redis_url, decode_responses=True)
    name = f"esp-late-{uuid.uuid4().hex[:6]}"
    login = (name, await EspRegistry(redis).add(name))
    await redis.aclose()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                 auth=login) as client:
        yield client


def sweeper(app: FastAPI) -> Abandonment:
    return app.state.reporting.reports.abandonment


async def test_calls_after_the_deadline_answer_abandoned(
    http: httpx.AsyncClient, clock: ManualClock
) -> None:
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    clock.advance(WINDOW + 0.2)
    for r in (
        await http.post("/ispws/upload", data={"id": report_id}, files={"file": ("f", b"x")}),
        await http.post("/ispws/finish", data={"id": report_id}),
        await http.post("/ispws/retract", data={"id": report_id}),
    ):
        assert (r.status_code, code(r.text)) == (409, 5103), r.text
    assert "Report abandoned" in r.text


async def test_the_sweep_retracts_once_through_the_retraction_command(
    http: httpx.AsyncClient, redis: Redis, app: FastAPI, short: Settings, clock: ManualClock
) -> None:
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    abandonment = sweeper(app)
    assert report_id not in await abandonment.sweep()  # not due yet
    clock.advance(WINDOW + 0.2)
    assert report_id in await abandonment.sweep()
    assert report_id not in await abandonment.sweep()  # once
    commands = [r for r in await read_topic(
        short, topics.RETRACTIONS_REQUESTED,
        lambda rs: any(r["report_id"] == report_id for r in rs)) if r["report_id"] == report_id]
    assert [(c["requested_by"], c["reason"]) for c in commands] == [("system", "abandoned")]
    status = (await http.get(f"/ispws/reports/{report_id}")).json()
    assert status["state"] == "abandoned"
    assert "abandoned" in [e["what"] for e in status["timeline"]]
    assert await redis.zscore(DEADLINES, report_id) is None


async def test_a_step_racing_the_sweep_wins_and_finished_reports_are_dropped(
    http: httpx.AsyncClient, redis: Redis, app: FastAPI, clock: ManualClock
) -> None:
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    abandonment = sweeper(app)
    # The timer holds a stale deadline; the ESP uploads just before it.
    await redis.zadd(DEADLINES, {report_id: clock() + 0.1})
    clock.advance(0.15)
    r = await http.post("/ispws/upload", data={"id": report_id}, files={"file": ("f", b"x")})
    assert code(r.text) == 0
    assert report_id not in await abandonment.sweep()
    assert (await redis.zscore(DEADLINES, report_id) or 0) > clock()  # rescheduled
    r = await http.post("/ispws/finish", data={"id": report_id})
    assert r.status_code == 200
    clock.advance(WINDOW + 0.2)
    assert report_id not in await abandonment.sweep()
    status = (await http.get(f"/ispws/reports/{report_id}")).json()
    assert status["state"] == "finished" and "abandoned" not in json.dumps(status["timeline"])
    assert await redis.zscore(DEADLINES, report_id) is None


async def test_a_sweep_cut_short_by_redis_leaves_nothing_to_wait_out_its_lease(
    http: httpx.AsyncClient, redis: Redis, app: FastAPI, monkeypatch: pytest.MonkeyPatch,
    clock: ManualClock,
) -> None:
    """Redis away for a moment in the middle of a sweep (a shard restarting): what the sweep
    took and had not abandoned is due again at once, so the next tick abandons it, not a minute
    later when its lease would end."""
    report_ids = [field((await http.post("/ispws/submit", content=report_xml(),
                                         headers=XML)).text, "reportId") for _ in range(2)]
    clock.advance(WINDOW + 0.2)
    real, calls = Drafts.step, 0

    async def away_once(self: Drafts, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("Connection closed by server.")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Drafts, "step", away_once)
    abandonment = sweeper(app)
    with pytest.raises(RedisConnectionError):
        await abandonment.sweep()
    for report_id in report_ids:
        assert (await redis.zscore(DEADLINES, report_id) or 0) <= clock(), "still leased"
    assert set(report_ids) <= set(await abandonment.sweep())


async def test_a_report_made_after_its_deadline_passed_is_still_abandoned(
    http: httpx.AsyncClient, redis: Redis, app: FastAPI, monkeypatch: pytest.MonkeyPatch,
    clock: ManualClock,
) -> None:
    """A report's creation that waited past the deadline it was watched with (its shard
    restarting, in the scaled chaos run): the timer, finding no draft meanwhile, dropped the
    watch, and the report stayed open for good; the ESP's cancel was answered 5103 ever after."""
    drafts: Drafts = app.state.reporting.reports.drafts
    abandonment = sweeper(app)
    create = drafts.create

    async def late(*args: Any, **kwargs: Any) -> bool:
        await abandonment.sweep(at=clock() + WINDOW + 1)  # a tick while this one waits
        return await create(*args, **kwargs)

    monkeypatch.setattr(drafts, "create", late)
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    monkeypatch.undo()
    assert report_id in await abandonment.sweep(at=clock() + WINDOW + 1)
    record = await drafts.record(report_id)
    assert record is not None and record.state == "abandoned"
    assert await redis.zscore(DEADLINES, report_id) is None


async def test_a_report_whose_watch_failed_after_a_late_creation_is_still_abandoned(
    http: httpx.AsyncClient, redis: Redis, app: FastAPI, monkeypatch: pytest.MonkeyPatch,
    clock: ManualClock,
) -> None:
    """As above, and the watch after the creation fails too (the deadlines' shard now the one
    restarting): the timer still looks at the report once the creation's grace is up."""
    drafts: Drafts = app.state.reporting.reports.drafts
    abandonment = sweeper(app)
    create, add, made = drafts.create, DueIndex.add, False

    async def late(*args: Any, **kwargs: Any) -> bool:
        nonlocal made
        await abandonment.sweep(at=clock() + WINDOW + 1)
        made = await create(*args, **kwargs)
        return made

    async def deadlines_away(self: DueIndex, *args: Any, **kwargs: Any) -> None:
        if made and self.key == DEADLINES:
            raise RedisConnectionError("Connection closed by server.")
        await add(self, *args, **kwargs)

    monkeypatch.setattr(drafts, "create", late)
    monkeypatch.setattr(DueIndex, "add", deadlines_away)
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    monkeypatch.undo()
    assert made
    assert report_id in await abandonment.sweep(at=clock() + CREATION_GRACE_S + 1)
    record = await drafts.record(report_id)
    assert record is not None and record.state == "abandoned"
