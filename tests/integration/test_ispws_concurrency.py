"""Many ESPs at once over /ispws, with the validation service consuming: nothing leaks across ESPs.

Every ESP uploads one blob that all of them share (so the cross-report duplicate check fires across
ESPs) and one of its own. Afterwards each ESP sees only its own reports; another ESP's report id
answers 5001 on every call; and the duplicate flags it sees (all intake holds) never name another
ESP's report.
"""

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from services.intake.esps import EspRegistry
from services.intake.main import create_app
from services.intake.timeline import Timeline
from services.validation.main import create_app as create_validation
from shared.settings import Settings
from tests.ispws_support import code, field, file_details, report_xml

ESPS = 8
REPORTS_EACH = 2
XML = {"content-type": "text/xml"}


@pytest.fixture(scope="module")
async def system(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    tuned = settings.model_copy(update={"tipline_files_dir": tmp_path_factory.mktemp("files")})
    validation = create_validation(tuned)
    await validation.start()
    app = create_app(tuned)
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        await validation.stop()


async def session(app: FastAPI, auth: tuple[str, str], shared: bytes) -> list[str]:
    """One ESP's work: reports with a shared and an own file, described, the first finished."""
    ids = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                 auth=auth) as http:
        for n in range(REPORTS_EACH):
            r = await http.post("/ispws/submit", content=report_xml(), headers=XML)
            report_id = field(r.text, "reportId")
            ids.append(report_id)
            for content in (shared, os.urandom(512)):
                r = await http.post("/ispws/upload", data={"id": report_id},
                                    files={"file": ("f", content)})
                assert code(r.text) == 0, r.text
                r = await http.post("/ispws/fileinfo", headers=XML,
                                    content=file_details(report_id, field(r.text, "fileId")))
                assert code(r.text) == 0, r.text
            if n == 0:
                r = await http.post("/ispws/finish", data={"id": report_id})
                assert r.status_code == 200, r.text
    return ids


async def probe(app: FastAPI, auth: tuple[str, str], report_id: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                 auth=auth) as http:
        return [
            await http.get(f"/ispws/reports/{report_id}"),
            await http.post("/ispws/finish", data={"id": report_id}),
            await http.post("/ispws/retract", data={"id": report_id}),
            await http.post("/ispws/upload", data={"id": report_id}, files={"file": ("f", b"x")}),
            await http.post("/ispws/fileinfo", headers=XML,
                            content=file_details(report_id, "0" * 32)),
        ]


async def own_view(app: FastAPI, auth: tuple[str, str], report_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                 auth=auth) as http:
        return (await http.get(f"/ispws/reports/{report_id}")).json()


async def test_many_esps_at_once_see_only_their_own(system: FastAPI, redis: Redis) -> None:
    registry = EspRegistry(redis)
    run = uuid.uuid4().hex[:6]
    names = [f"esp-{run}-{i}" for i in range(ESPS)]
    logins = {name: (name, await registry.add(name)) for name in names}
    shared = os.urandom(1024)

    started = time.perf_counter()
    results = await asyncio.gather(*[session(system, logins[n], shared) for n in names])
    elapsed = time.perf_counter() - started
    owned = dict(zip(names, results, strict=True))
    calls = ESPS * REPORTS_EACH * 5 + ESPS
    print(f"\n{ESPS} ESPs, {calls} calls at once in {elapsed:.2f}s ({calls / elapsed:.0f} calls/s)")

    # Every ESP probes one report of every other ESP, all at once.
    started = time.perf_counter()
    probes = await asyncio.gather(*[
        probe(system, logins[me], owned[other][0]) for me in names for other in names
        if other != me
    ])
    for answers in probes:
        for r in answers:
            assert (r.status_code, code(r.text)) == (404, 5001), r.text
    print(f"{len(probes) * 5} cross-ESP probes in {time.perf_counter() - started:.2f}s")
    started = time.perf_counter()

    # The shared blob is flagged on every report once validation has seen the uploads.
    timeline = Timeline(redis)
    every = [rid for ids in owned.values() for rid in ids]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        flagged = [rid for rid in every if any(
            e["what"] == "duplicate content across reports" for e in await timeline.entries(rid))]
        if len(flagged) == len(every):
            break
        await asyncio.sleep(0.2)
    assert len(flagged) == len(every)
    print(f"duplicate flags on all {len(every)} reports after {time.perf_counter() - started:.2f}s")

    for name, ids in owned.items():
        for report_id in ids:
            view = await own_view(system, logins[name], report_id)
            assert view["report_id"] == report_id
            for entry in view["timeline"]:
                if entry.get("other_report"):
                    assert entry["other_report"] in ids, (name, entry)
            # Intake (facing the internet) never even learns of the other ESPs' copies: the
            # fact of those stays with validation (shared/audiences.py).
            kept = [e.get("other_report") for e in await timeline.entries(report_id)]
            assert set(kept) - {None} <= set(ids), (name, kept)
