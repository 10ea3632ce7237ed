"""Abandonment on real Redis: late calls refused, the sweep retracts once, a racing step wins."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from services.intake.esps import EspRegistry
from services.intake.main import create_app
from services.validation.abandonment import DEADLINES, Abandonment
from shared.contracts import RetractReport
from shared.drafts import Drafts
from shared.settings import Settings
from shared.timeline import Timeline
from tests.ispws_support import code, field, report_xml

WINDOW = 1.0
XML = {"content-type": "text/xml"}


@pytest.fixture(scope="module")
def short(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings.model_copy(update={
        "tipline_files_dir": tmp_path_factory.mktemp("files"),
        "tipline_abandon_after_open_s": WINDOW, "tipline_abandon_after_change_s": WINDOW,
    })


@pytest.fixture(scope="module")
async def http(short: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(short)
    redis = Redis.from_url(short.redis_url, decode_responses=True)
    name = f"esp-late-{uuid.uuid4().hex[:6]}"
    login = (name, await EspRegistry(redis).add(name))
    await redis.aclose()
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://i", auth=login
    ) as client:
        yield client


def sweeper(redis: Redis, short: Settings) -> tuple[Abandonment, list[RetractReport]]:
    sent: list[RetractReport] = []

    async def publish(command: RetractReport) -> None:
        sent.append(command)

    drafts = Drafts(redis, after_open_s=short.tipline_abandon_after_open_s,
                    after_change_s=short.tipline_abandon_after_change_s)
    return Abandonment(redis, drafts, Timeline(redis), publish), sent


async def test_calls_after_the_deadline_answer_abandoned(http: httpx.AsyncClient) -> None:
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    await asyncio.sleep(WINDOW + 0.2)
    for r in (
        await http.post("/ispws/upload", data={"id": report_id}, files={"file": ("f", b"x")}),
        await http.post("/ispws/finish", data={"id": report_id}),
        await http.post("/ispws/retract", data={"id": report_id}),
    ):
        assert (r.status_code, code(r.text)) == (409, 5103), r.text
    assert "Report abandoned" in r.text


async def test_the_sweep_retracts_once_through_the_retraction_command(
    http: httpx.AsyncClient, redis: Redis, short: Settings
) -> None:
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    abandonment, sent = sweeper(redis, short)
    await abandonment.watch(report_id, time.time() + WINDOW)
    assert report_id not in await abandonment.sweep()  # not due yet
    await asyncio.sleep(WINDOW + 0.2)
    assert report_id in await abandonment.sweep()
    assert report_id not in await abandonment.sweep()  # once
    (command,) = [c for c in sent if c.report_id == report_id]
    assert (command.requested_by, command.reason) == ("system", "abandoned")
    status = (await http.get(f"/ispws/reports/{report_id}")).json()
    assert status["state"] == "abandoned"
    assert "abandoned" in [e["what"] for e in status["timeline"]]
    assert await redis.zscore(DEADLINES, report_id) is None


async def test_a_step_racing_the_sweep_wins_and_finished_reports_are_dropped(
    http: httpx.AsyncClient, redis: Redis, short: Settings
) -> None:
    report_id = field((await http.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                      "reportId")
    abandonment, sent = sweeper(redis, short)
    # The timer holds a stale deadline; the ESP uploads just before it.
    await abandonment.watch(report_id, time.time() + 0.1)
    await asyncio.sleep(0.15)
    r = await http.post("/ispws/upload", data={"id": report_id}, files={"file": ("f", b"x")})
    assert code(r.text) == 0
    assert report_id not in await abandonment.sweep()
    assert (await redis.zscore(DEADLINES, report_id) or 0) > time.time()  # rescheduled
    r = await http.post("/ispws/finish", data={"id": report_id})
    assert r.status_code == 200
    await asyncio.sleep(WINDOW + 0.2)
    assert report_id not in await abandonment.sweep()
    assert not [c for c in sent if c.report_id == report_id]
    assert await redis.zscore(DEADLINES, report_id) is None
