"""The /ispws API in-process (ASGI) on the real broker and Redis: every answer and error path."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI

from services.intake.main import create_app
from shared.settings import Settings
from tests.clock import ManualClock
from tests.ispws_support import code, field, file_details, random_file, report_xml

XML = {"content-type": "text/xml; charset=utf-8"}
JSON = "application/json"
MAX_UPLOAD = 64 * 1024


@pytest.fixture(scope="module")
def ispws_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings.model_copy(update={
        "tipline_files_dir": tmp_path_factory.mktemp("files"),
        "tipline_max_upload_bytes": MAX_UPLOAD,
        "tipline_max_body_bytes": 32 * 1024,
    })


async def _running(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def app(ispws_settings: Settings) -> AsyncIterator[FastAPI]:
    async for running in _running(ispws_settings):
        yield running


async def open_report(http: httpx.AsyncClient, **kwargs: object) -> str:
    r = await http.post("/ispws/submit", content=report_xml(**kwargs), headers=XML)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return field(r.text, "reportId")


async def upload(http: httpx.AsyncClient, report_id: str, content: bytes) -> httpx.Response:
    return await http.post("/ispws/upload", data={"id": report_id},
                           files={"file": ("synthetic.bin", content)})


# --- status, schema, auth -----------------------------------------------------------------


async def test_status_names_the_esp_and_every_answer_has_a_request_id(
    http: httpx.AsyncClient, esps: dict[str, tuple[str, str]]
) -> None:
    r = await http.get("/ispws/status")
    assert r.status_code == 200
    assert code(r.text) == 0
    assert f"Remote User : {esps['a'][0]}, Remote Ip : " in r.text
    assert len(r.headers["Request-ID"]) == 32


async def test_xsd_is_served(http: httpx.AsyncClient) -> None:
    r = await http.get("/ispws/xsd")
    assert r.status_code == 200
    assert b'<xs:element name="report">' in r.content


@pytest.mark.parametrize("auth", [None, ("nobody", "x"), "bad-password"])
async def test_missing_or_bad_credentials_answer_401_with_xml(
    app: FastAPI, esps: dict[str, tuple[str, str]], auth: object
) -> None:
    if auth == "bad-password":
        auth = (esps["a"][0], "wrong")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i") as c:
        r = await c.post("/ispws/submit", content=report_xml(), headers=XML, auth=auth)  # type: ignore[arg-type]
    assert r.status_code == 401
    assert code(r.text) == 2000
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert "Request-ID" in r.headers


async def test_garbage_authorization_header_is_a_401(app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i") as c:
        r = await c.get("/ispws/status", headers={"Authorization": "Basic !!!notbase64"})
    assert r.status_code == 401


async def test_schema_errors_name_path_line_column_and_order(http: httpx.AsyncClient) -> None:
    # platform before incidentType: out of order; incidentDateTime missing entirely.
    body = b"""<report>
  <incidentSummary>
    <platform>chat</platform>
    <incidentType>Child Sex Trafficking</incidentType>
  </incidentSummary>
  <reporter><reportingPerson><email>a@esp.example</email></reportingPerson></reporter>
</report>"""
    r = await http.post("/ispws/submit", content=body, headers=XML,
                        params={}, )
    assert r.status_code == 400
    assert code(r.text) == 4100
    r = await http.post("/ispws/submit", content=body, headers={**XML, "Accept": JSON})
    errors = r.json()["reportResponse"]["errors"]
    first = errors[0]
    assert first["path"] == "incidentSummary/platform"
    assert (first["line"], first["column"]) == (3, 5)
    assert "out of order" in first["reason"] and "<incidentType>" in first["reason"]


async def test_business_rules_answer_4100_at_submit(http: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime, timedelta

    r = await http.post("/ispws/submit", headers=XML,
                        content=report_xml(when=datetime.now(UTC) + timedelta(days=1)))
    assert (r.status_code, code(r.text)) == (400, 4100)
    assert "must be in the past" in r.text
    tail = ("<internetDetails><emailIncident><emailAddress>x@else.example</emailAddress>"
            "</emailIncident></internetDetails>")
    body = report_xml().replace(b"<reporter>", tail.encode() + b"<reporter>")
    r = await http.post("/ispws/submit", headers=XML, content=body)
    assert (r.status_code, code(r.text)) == (400, 4100)
    assert "x@else.example must also appear" in r.text


@pytest.mark.parametrize("body", [
    b"<report><incidentSummary>",
    b"not xml at all",
    b'<?xml version="1.0" encoding="bogus"?><report/>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
    b"<report>&b;</report>",
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<report>&x;</report>",
])
async def test_malformed_xml_dtds_and_entities_answer_4110(
    http: httpx.AsyncClient, body: bytes
) -> None:
    r = await http.post("/ispws/submit", content=body, headers=XML)
    assert (r.status_code, code(r.text)) == (400, 4110)
    assert "passwd" not in r.text.split("responseDescription")[1][:40]


async def test_wrong_content_type_is_415_and_oversized_body_413(http: httpx.AsyncClient) -> None:
    r = await http.post("/ispws/submit", content=report_xml(), headers={"content-type": "text/x"})
    assert (r.status_code, code(r.text)) == (415, 4000)
    r = await http.post("/ispws/submit", content=b"<report>" + b" " * 40_000 + b"</report>",
                        headers=XML)
    assert r.status_code == 413
    r = await http.post("/ispws/finish", json={"id": "1"}, headers={"content-type": "text/csv"})
    assert r.status_code == 415
    r = await http.post("/ispws/upload", content=b"x", headers=XML)
    assert r.status_code == 415


async def test_json_is_accepted_and_returned(http: httpx.AsyncClient) -> None:
    doc = {"report": {
        "incidentSummary": {"incidentType": "Child Sex Tourism",
                            "incidentDateTime": "2024-02-03T04:05:06Z"},
        "reporter": {"reportingPerson": {"email": ["t@esp.example"]}},
    }}
    r = await http.post("/ispws/submit", json=doc, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    answer = r.json()["reportResponse"]
    assert answer["responseCode"] == 0 and isinstance(answer["reportId"], int)
    doc["report"]["incidentSummary"] = {"incidentDateTime": "2024-02-03T04:05:06Z"}
    r = await http.post("/ispws/submit", json=doc, headers={"Accept": "application/json"})
    assert r.json()["reportResponse"]["responseCode"] == 4100
    r = await http.post("/ispws/submit", content=b"{nope", headers={"content-type": JSON})
    assert (r.status_code, code(r.text)) == (400, 4110)
    for depth in (300, 5000):  # deeper than XML allows, deeper than Python recurses
        deep = b'{"a":' * depth + b"1" + b"}" * depth
        r = await http.post("/ispws/submit", content=deep, headers={"content-type": JSON})
        assert (r.status_code, code(r.text)) == (400, 4110)
    deep_xml = b"<report>" + b"<a>" * 3000 + b"</a>" * 3000 + b"</report>"
    r = await http.post("/ispws/submit", content=deep_xml, headers=XML)
    assert r.status_code == 400


# --- files --------------------------------------------------------------------------------


async def test_upload_hashes_flags_duplicates_and_stores_once(
    http: httpx.AsyncClient, ispws_settings: Settings
) -> None:
    import hashlib

    report_id = await open_report(http)
    content = random_file()
    first = await upload(http, report_id, content)
    second = await upload(http, report_id, content)
    assert first.status_code == second.status_code == 200
    md5 = hashlib.md5(content).hexdigest()
    assert field(first.text, "hash") == field(second.text, "hash") == md5
    assert field(first.text, "fileId") != field(second.text, "fileId")
    sha = hashlib.sha256(content).hexdigest()
    stored = list(Path(ispws_settings.tipline_files_dir).rglob(sha))
    assert len(stored) == 1 and stored[0].read_bytes() == content
    status = (await http.get(f"/ispws/reports/{report_id}")).json()
    files = {f["file_id"]: f for f in status["files"]}
    assert files[field(second.text, "fileId")]["duplicate_of"] == field(first.text, "fileId")
    assert files[field(first.text, "fileId")].get("duplicate_of") is None


async def test_upload_errors(http: httpx.AsyncClient) -> None:
    report_id = await open_report(http)
    r = await upload(http, report_id, random_file(MAX_UPLOAD + 1))
    assert (r.status_code, code(r.text)) == (413, 4200)
    r = await http.post("/ispws/upload", files={"id": (None, report_id)})
    assert (r.status_code, code(r.text)) == (400, 4200)  # no file part at all
    r = await http.post("/ispws/upload", files={"file": ("a", b"abc")})
    assert (r.status_code, code(r.text)) == (400, 4000)
    r = await upload(http, "999999999999", b"abc")
    assert (r.status_code, code(r.text)) == (404, 5001)
    r = await http.post("/ispws/upload", content=b"--x\r\ngarbage",
                        headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400


async def test_fileinfo_once_per_file_with_rules(http: httpx.AsyncClient) -> None:
    report_id = await open_report(http)
    file_id = field((await upload(http, report_id, random_file())).text, "fileId")
    bad = file_details(report_id, file_id, "<fileViewedByEsp>false</fileViewedByEsp>"
                                           "<exifViewedByEsp>true</exifViewedByEsp>")
    r = await http.post("/ispws/fileinfo", content=bad, headers=XML)
    assert (r.status_code, code(r.text)) == (400, 4100)
    assert "exifViewedByEsp" in r.text
    bad = file_details(report_id, file_id, "<fileRelevance>Supplemental Reported</fileRelevance>"
                                           "<industryClassification>A1</industryClassification>")
    r = await http.post("/ispws/fileinfo", content=bad, headers=XML)
    assert (r.status_code, code(r.text)) == (400, 4100)
    order = file_details(report_id, file_id, "<deviceId><idType>t</idType><idValue>v</idValue>"
                         "</deviceId><ipCaptureEvent><ipAddress>192.0.2.1</ipAddress>"
                         "</ipCaptureEvent>")
    r = await http.post("/ispws/fileinfo", content=order, headers=XML)
    assert (r.status_code, code(r.text)) == (400, 4100)
    assert "&lt;ipCaptureEvent&gt; is out of order" in r.text
    good = file_details(report_id, file_id, "<fileViewedByEsp>true</fileViewedByEsp>")
    r = await http.post("/ispws/fileinfo", content=good, headers=XML)
    assert (r.status_code, code(r.text)) == (200, 0)
    r = await http.post("/ispws/fileinfo", content=good, headers=XML)
    assert (r.status_code, code(r.text)) == (409, 4000)
    r = await http.post("/ispws/fileinfo", content=file_details(report_id, "f" * 32), headers=XML)
    assert (r.status_code, code(r.text)) == (404, 5002)


# --- finish, retract, states ----------------------------------------------------------------


async def test_finish_is_the_receipt_and_closes_the_report(http: httpx.AsyncClient) -> None:
    report_id = await open_report(http)
    ids = [field((await upload(http, report_id, random_file())).text, "fileId") for _ in range(2)]
    r = await http.post("/ispws/finish", files={"id": (None, report_id)})  # multipart form
    assert r.status_code == 200
    assert "<reportDoneResponse>" in r.text and "<responseDescription>" not in r.text
    assert [f for f in ids if f"<fileId>{f}</fileId>" in r.text] == ids
    r = await http.post("/ispws/finish", data={"id": report_id})  # urlencoded
    assert (r.status_code, code(r.text)) == (409, 5102)
    r = await upload(http, report_id, b"late")
    assert (r.status_code, code(r.text)) == (409, 5102)
    r = await http.post("/ispws/fileinfo", content=file_details(report_id, ids[0]), headers=XML)
    assert (r.status_code, code(r.text)) == (409, 5102)
    r = await http.post("/ispws/finish", data={"other": "1"})
    assert (r.status_code, code(r.text)) == (400, 4000)


async def test_finish_without_files_answers_empty_files(http: httpx.AsyncClient) -> None:
    report_id = await open_report(http)
    r = await http.post("/ispws/finish", data={"id": report_id})
    assert "<files/>" in r.text


async def test_retract_before_finish_then_every_call_says_retracted(
    http: httpx.AsyncClient,
) -> None:
    report_id = await open_report(http)
    r = await http.post("/ispws/retract", data={"id": report_id})
    assert (r.status_code, code(r.text)) == (200, 0)
    for call in (
        http.post("/ispws/retract", data={"id": report_id}),
        http.post("/ispws/finish", data={"id": report_id}),
        upload(http, report_id, b"x"),
    ):
        r = await call
        assert (r.status_code, code(r.text)) == (409, 5101)
    timeline = (await http.get(f"/ispws/reports/{report_id}")).json()["timeline"]
    assert [e["what"] for e in timeline][-1] == "retraction requested"
    assert timeline[-1]["post_finish"] is False


async def test_post_finish_retraction_and_strict_mode(
    http: httpx.AsyncClient, ispws_settings: Settings, esps: dict[str, tuple[str, str]]
) -> None:
    report_id = await open_report(http)
    await http.post("/ispws/finish", data={"id": report_id})
    r = await http.post("/ispws/retract", data={"id": report_id, "reason": "wrong account"})
    assert (r.status_code, code(r.text)) == (200, 0)
    assert "post-finish retraction" in r.text
    entry = (await http.get(f"/ispws/reports/{report_id}")).json()["timeline"][-1]
    assert entry["post_finish"] is True and "wrong account" in entry["reason"]

    strict = ispws_settings.model_copy(update={"tipline_strict_compat": True})
    async for app in _running(strict):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                     auth=esps["a"]) as c:
            other = await open_report(c)
            await c.post("/ispws/finish", data={"id": other})
            r = await c.post("/ispws/retract", data={"id": other})
            assert (r.status_code, code(r.text)) == (409, 5102)


async def test_another_esps_report_does_not_exist(
    app: FastAPI, http: httpx.AsyncClient, esps: dict[str, tuple[str, str]]
) -> None:
    report_id = await open_report(http)
    file_id = field((await upload(http, report_id, random_file())).text, "fileId")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                 auth=esps["b"]) as other:
        answers = [
            await upload(other, report_id, b"x"),
            await other.post("/ispws/fileinfo", content=file_details(report_id, file_id),
                             headers=XML),
            await other.post("/ispws/finish", data={"id": report_id}),
            await other.post("/ispws/retract", data={"id": report_id}),
            await other.get(f"/ispws/reports/{report_id}"),
        ]
        supersede = await other.post("/ispws/submit", content=report_xml(),
                                     headers={**XML, "Tipline-Supersedes": report_id})
    for r in answers:
        assert (r.status_code, code(r.text)) == (404, 5001), r.text
    assert (supersede.status_code, code(supersede.text)) == (404, 5001)
    assert (await http.get(f"/ispws/reports/{report_id}")).json()["state"] == "open"


async def test_batched_rules_are_checked_at_finish(http: httpx.AsyncClient) -> None:
    report_id = await open_report(http, batched=True)
    r = await http.post("/ispws/finish", data={"id": report_id})
    assert (r.status_code, code(r.text)) == (400, 4100)
    assert "<reportDoneResponse>" in r.text  # /finish answers its own element, errors too
    assert "exactly one file" in r.headers["Tipline-Response-Description"]
    file_id = field((await upload(http, report_id, random_file())).text, "fileId")
    meme = file_details(report_id, file_id, "<fileAnnotations><viral/></fileAnnotations>")
    assert code((await http.post("/ispws/fileinfo", content=meme, headers=XML)).text) == 0
    r = await http.post("/ispws/finish", data={"id": report_id})
    assert (r.status_code, code(r.text)) == (200, 0), r.text


# --- idempotency ----------------------------------------------------------------------------


async def test_idempotency_key_returns_the_first_answer(http: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    answers = await asyncio.gather(*[
        http.post("/ispws/submit", content=report_xml(), headers={**XML, **key})
        for _ in range(5)
    ])
    assert {r.status_code for r in answers} == {200}
    assert len({field(r.text, "reportId") for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 4
    report_id = field(answers[0].text, "reportId")

    key = {"Idempotency-Key": uuid.uuid4().hex}
    content = random_file()
    first = await http.post("/ispws/upload", data={"id": report_id}, headers=key,
                            files={"file": ("a", content)})
    again = await http.post("/ispws/upload", data={"id": report_id}, headers=key,
                            files={"file": ("a", content)})
    assert first.text == again.text
    files = (await http.get(f"/ispws/reports/{report_id}")).json()["files"]
    assert len(files) == 1
    # The same key on another endpoint is a conflict, not a replay.
    r = await http.post("/ispws/finish", data={"id": report_id}, headers=key)
    assert (r.status_code, code(r.text)) == (409, 4000)
    r = await http.post("/ispws/finish", data={"id": report_id},
                        headers={"Idempotency-Key": "bad key with spaces"})
    assert r.status_code == 400


async def test_a_retry_after_a_run_that_died_opens_the_same_report(
    app: FastAPI, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run opened the report, then never answered (Redis went away, say): the retry
    gets 409 with Retry-After while the run's short lease holds, then the same report."""
    svc = app.state.reporting
    real = svc.open
    started, release = asyncio.Event(), asyncio.Event()
    opened: list[str] = []

    async def hangs(*args: Any, **kwargs: Any) -> Any:
        answer = await real(*args, **kwargs)
        opened.append(answer.report_id)
        started.set()
        await release.wait()  # stuck: the answer never comes
        return answer

    key = {**XML, "Idempotency-Key": uuid.uuid4().hex}
    monkeypatch.setattr("services.intake.idempotency.WAIT_S", 0.2)
    monkeypatch.setattr("services.intake.ispws.SHORT_LEASE_S", 1.0)
    clock = ManualClock()
    monkeypatch.setattr(app.state.idempotency, "clock", clock)
    monkeypatch.setattr(svc, "open", hangs)
    first = asyncio.create_task(http.post("/ispws/submit", content=report_xml(), headers=key))
    await started.wait()
    monkeypatch.setattr(svc, "open", real)
    busy = await http.post("/ispws/submit", content=report_xml(), headers=key)
    assert busy.status_code == 409 and busy.headers["Retry-After"] == "1"
    clock.advance(1.1)  # the lease lapses
    retried = await http.post("/ispws/submit", content=report_xml(), headers=key)
    assert (retried.status_code, code(retried.text)) == (200, 0), retried.text
    assert [field(retried.text, "reportId")] == opened  # the same report, not a second one
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_idempotency_keys_are_per_esp(
    app: FastAPI, http: httpx.AsyncClient, esps: dict[str, tuple[str, str]]
) -> None:
    key = {**XML, "Idempotency-Key": uuid.uuid4().hex}
    mine = await http.post("/ispws/submit", content=report_xml(), headers=key)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i",
                                 auth=esps["b"]) as other:
        theirs = await other.post("/ispws/submit", content=report_xml(), headers=key)
    assert field(mine.text, "reportId") != field(theirs.text, "reportId")


# --- supersession and the legacy JSON API ------------------------------------------------------


async def test_supersedes_header_links_the_new_report(http: httpx.AsyncClient) -> None:
    old = await open_report(http)
    r = await http.post("/ispws/submit", content=report_xml(),
                        headers={**XML, "Tipline-Supersedes": old})
    new = field(r.text, "reportId")
    assert (await http.get(f"/ispws/reports/{new}")).json()["supersedes"] == old
    r = await http.post("/ispws/submit", content=report_xml(),
                        headers={**XML, "Tipline-Supersedes": "nope"})
    assert (r.status_code, code(r.text)) == (404, 5001)


async def test_v1_api_still_works_beside_ispws(
    app: FastAPI, http: httpx.AsyncClient, esps: dict[str, tuple[str, str]]
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://i") as c:
        r = await c.post("/v1/reports", json={"report": {"incident_type": "Child Sex Tourism"}},
                         auth=esps["a"])
        assert r.status_code == 202
        assert "Request-ID" in r.headers
    # The same ESP sees its /v1 report under /ispws: finished from the start, retractable.
    report_id = r.json()["report_id"]
    assert (await http.get(f"/ispws/reports/{report_id}")).json()["state"] == "finished"
    for r in (await http.post("/ispws/finish", data={"id": report_id}),
              await upload(http, report_id, b"x"),
              await http.post("/ispws/fileinfo", content=file_details(report_id, "0" * 32),
                              headers=XML)):
        assert (r.status_code, code(r.text)) == (409, 5102)
    r = await http.post("/ispws/retract", data={"id": report_id})
    assert (r.status_code, code(r.text)) == (200, 0)
    assert "post-finish" in r.text


async def test_with_the_broker_away_an_accepted_step_is_kept_and_sent_later(
    app: FastAPI, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted means stored with its event (the outbox): the ESP gets its receipt even while the
    broker is away, and the sweep sends the event once the broker is back."""
    async def broken(*args: object, **kwargs: object) -> None:
        raise KafkaConnectionError("broker unreachable")

    reporting = app.state.reporting
    report_id = await open_report(http)
    kept = field((await upload(http, report_id, random_file())).text, "fileId")
    monkeypatch.setattr(reporting.reports.outbox.broker, "publish", broken)
    content = random_file()
    added = await upload(http, report_id, content)
    details = file_details(report_id, kept, "<fileViewedByEsp>true</fileViewedByEsp>")
    described = await http.post("/ispws/fileinfo", content=details, headers=XML)
    finished = await http.post("/ispws/finish", data={"id": report_id})
    for r in (added, described, finished):
        assert (r.status_code, code(r.text)) == (200, 0), r.text
    status = (await http.get(f"/ispws/reports/{report_id}")).json()
    assert status["state"] == "finished"
    whats = [e["what"] for e in status["timeline"]]
    assert "finished" not in whats and "file described" not in whats  # not sent yet
    # The ESP's retry of finish while its event waits: the receipt again, not "already finished".
    retried = await http.post("/ispws/finish", data={"id": report_id})
    assert (retried.status_code, code(retried.text)) == (200, 0)
    monkeypatch.undo()
    assert await reporting.reports.outbox.sweep(now=time.time() + 3600) >= 3
    status = (await http.get(f"/ispws/reports/{report_id}")).json()
    whats = [e["what"] for e in status["timeline"]]
    assert {"file uploaded", "file described", "finished"} <= set(whats)
    assert [f["file_id"] for f in status["files"]] == [kept, field(added.text, "fileId")]
    finish_again = await http.post("/ispws/finish", data={"id": report_id})
    assert (finish_again.status_code, code(finish_again.text)) == (409, 5102)


async def test_a_failure_inside_answers_1000_with_the_request_id(
    app: FastAPI, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    report_id = await open_report(http)
    monkeypatch.setattr(app.state.reporting.reports.drafts, "step", broken)
    r = await http.post("/ispws/finish", data={"id": report_id})
    assert (r.status_code, code(r.text)) == (500, 1000)
    assert "<reportDoneResponse>" in r.text and r.headers["Request-ID"]
    monkeypatch.undo()
    r = await http.post("/ispws/finish", data={"id": report_id})
    assert (r.status_code, code(r.text)) == (200, 0)
