"""Idempotency-Key on the JSON API (/v1) in-process (ASGI), on the real broker and Redis: a
retried submit or retract gets the first answer and makes one report, whatever failed between."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisUnavailable

from services.intake.main import create_app
from services.intake.outcomes import Refused, Submitted
from services.intake.reporting import Reporting
from shared.settings import Settings
from tests.clock import ManualClock

REPORT = {"incident_type": "Child Sex Tourism", "reporter_email": "safety@esp.example",
          "location": {"country": "GB"}, "additional_info": "synthetic"}


@pytest.fixture(scope="module")
async def app(settings: Settings, tmp_path_factory: pytest.TempPathFactory
              ) -> AsyncIterator[FastAPI]:
    running = create_app(settings.model_copy(update={
        "tipline_files_dir": tmp_path_factory.mktemp("files")}))
    async with running.router.lifespan_context(running):
        yield running


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"replay-{uuid.uuid4().hex}"}


async def submit(http: httpx.AsyncClient, headers: dict[str, str],
                 report: dict[str, Any] | None = None) -> httpx.Response:
    return await http.post("/v1/reports", json={"report": report or REPORT}, headers=headers)


async def test_retries_with_one_key_make_one_report(http: httpx.AsyncClient) -> None:
    same = key()
    answers = await asyncio.gather(*[submit(http, same) for _ in range(5)])
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["report_id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 4
    later = await submit(http, same)
    assert later.json() == answers[0].json()
    # Without a key, or with another, the same report again is another report.
    assert (await submit(http, {})).json()["report_id"] != later.json()["report_id"]
    assert (await submit(http, key())).json()["report_id"] != later.json()["report_id"]


async def test_a_key_reused_with_another_body_is_refused(http: httpx.AsyncClient) -> None:
    same = key()
    assert (await submit(http, same)).status_code == 202
    r = await submit(http, same, {**REPORT, "additional_info": "another report"})
    assert r.status_code == 422
    assert "another request body" in r.json()["detail"]
    report_id = (await submit(http, same)).json()["report_id"]
    r = await http.post(f"/v1/reports/{report_id}/retract", json={"reason": "x"}, headers=same)
    assert r.status_code == 422
    assert "was used for /v1/reports" in r.json()["detail"]
    r = await submit(http, {"Idempotency-Key": "spaces are not allowed"})
    assert r.status_code == 422


async def test_keys_are_per_esp(app: FastAPI, http: httpx.AsyncClient,
                                esps: dict[str, tuple[str, str]]) -> None:
    same = key()
    mine = (await submit(http, same)).json()["report_id"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                 auth=esps["b"]) as other:
        theirs = (await submit(other, same)).json()["report_id"]
    assert mine != theirs


async def test_a_run_that_failed_after_making_the_report_is_answered_with_it(
    app: FastAPI, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis went away after the report was stored, before the answer: the call fails (503),
    and the retry with the same key finds the report its first run made, not a new one."""
    svc: Reporting = app.state.reporting
    real = svc.submit
    made: list[str] = []

    async def stored_then_lost(*args: Any, **kwargs: Any) -> Submitted:
        stored = await real(*args, **kwargs)
        assert isinstance(stored, Submitted)  # the report was made
        made.append(stored.report_id)
        raise RedisUnavailable("connection lost after the report was stored")

    same = key()
    monkeypatch.setattr(svc, "submit", stored_then_lost)
    assert (await submit(http, same)).status_code == 503
    monkeypatch.setattr(svc, "submit", real)
    retried = await submit(http, same)
    assert retried.status_code == 202
    assert [retried.json()["report_id"]] == made
    status = (await http.get(f"/v1/reports/{made[0]}")).json()
    assert [e["what"] for e in status["timeline"]].count("submitted") == 1


async def test_a_lapsed_run_is_taken_over_on_the_same_report(
    app: FastAPI, http: httpx.AsyncClient, esps: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that died mid-call (its lease lapsed, nothing given up): the retry waits for it,
    answers 409 with Retry-After while the lease holds, then runs on the first reservation."""
    svc: Reporting = app.state.reporting
    real = svc.submit
    started, release = asyncio.Event(), asyncio.Event()
    made: list[str] = []

    async def hangs(*args: Any, **kwargs: Any) -> Submitted | Refused:
        outcome = await real(*args, **kwargs)
        assert isinstance(outcome, Submitted)  # the report was made
        made.append(outcome.report_id)
        started.set()
        await release.wait()  # stuck: the answer never comes
        return outcome

    same = key()
    monkeypatch.setattr("services.intake.idempotency.WAIT_S", 0.2)
    monkeypatch.setattr("services.intake.api.SHORT_LEASE_S", 1.0)
    clock = ManualClock()
    monkeypatch.setattr(app.state.idempotency, "clock", clock)
    monkeypatch.setattr(svc, "submit", hangs)
    first = asyncio.create_task(submit(http, same))
    await started.wait()
    monkeypatch.setattr(svc, "submit", real)
    busy = await submit(http, same)
    assert busy.status_code == 409 and busy.headers["Retry-After"] == "1"
    clock.advance(1.1)  # the lease lapses
    retried = await submit(http, same)
    assert retried.status_code == 202
    assert [retried.json()["report_id"]] == made
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    status = (await http.get(f"/v1/reports/{made[0]}")).json()
    assert [e["what"] for e in status["timeline"]].count("submitted") == 1
    assert status["state"] == "finished"


async def test_a_retried_retract_gets_the_first_answer(http: httpx.AsyncClient) -> None:
    report_id = (await submit(http, key())).json()["report_id"]
    same = key()
    first = await http.post(f"/v1/reports/{report_id}/retract", json={"reason": "in error"},
                            headers=same)
    again = await http.post(f"/v1/reports/{report_id}/retract", json={"reason": "in error"},
                            headers=same)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers.get("Idempotent-Replayed") == "true"
    # Without the key the second retraction is what it is: already retracted.
    assert (await http.post(f"/v1/reports/{report_id}/retract", json={})).status_code == 409
