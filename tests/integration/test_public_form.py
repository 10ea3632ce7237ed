"""The public form (/report) in-process (ASGI) on the real broker and Redis, as a browser sends it:
the page and its headers, field errors beside their fields with what was typed kept, a receipt,
a double click and a resend that make one report, adding information with the receipt (and
not without it), the limits (per address, size, what is not a form), and that no ESP login opens
a public report."""

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
import pytest
from fastapi import FastAPI

from services.intake.esps import EspRegistry
from services.intake.main import create_app
from shared import topics
from shared.audiences import PUBLIC_REPORTER_SEES
from shared.contracts import PUBLIC_FORM
from shared.settings import Settings
from shared.store import connect
from tests.integration.agency_helpers import read_topic

CONTACT = {"contact_name": "Synthetic Parent", "contact_email": "parent@example.test",
           "contact_phone": "+1 555 0100"}


def a_report(**changes: str) -> dict[str, str]:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    return {"incident_type": "Online Enticement of Children for Sexual Acts",
            "incident_date": yesterday,
            "description": f"synthetic: a stranger asked a child to meet {uuid.uuid4().hex}",
            "urls": "https://chat.example.test/room/1\nhttps://chat.example.test/u/x",
            "platform": "Synthetic Chat", "country": "", "us_state": "TX", "place": "",
            **CONTACT, **changes}


@pytest.fixture(scope="module")
async def app(settings: Settings, tmp_path_factory: pytest.TempPathFactory
              ) -> AsyncIterator[FastAPI]:
    local = settings.model_copy(update={
        "tipline_files_dir": tmp_path_factory.mktemp("files"),
        "tipline_public_form_min_s": 0.0, "tipline_public_per_address": 6})
    app = create_app(local)
    async with app.router.lifespan_context(app):
        yield app


def browser(app: FastAPI, address: str | None = None) -> httpx.AsyncClient:
    """A browser at its own address (the limits count per address)."""
    client = (address or f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7", 50000)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, client=client),
                             base_url="http://intake")


def token_of(page: str, form: str = "/report") -> str:
    section = page.split(f'action="{form}"', 1)[1]
    match = re.search(r'name="token" value="([^"]+)"', section)
    assert match, page
    return unescape(match.group(1))


def field(page: str, name: str) -> str:
    """The value of a <dd data-field=name> on a receipt."""
    match = re.search(rf'data-field="{name}">([^<]*)<', page)
    assert match, page
    return unescape(match.group(1))


async def send(http: httpx.AsyncClient, form: dict[str, str], path: str = "/report"
               ) -> httpx.Response:
    if "token" not in form:
        page = await http.get(path)
        form = {**form, "token": token_of(page.text, path)}
    return await http.post(path, data=form)


async def test_the_page_loads_nothing_from_elsewhere_and_labels_every_field(
        app: FastAPI) -> None:
    async with browser(app) as http:
        page = await http.get("/report")
        style = await http.get("/report/form.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert not re.search(r'(src|href)="(https?:)?//', page.text)  # nothing from elsewhere
    assert "<script" not in page.text
    for control in re.findall(r'<(?:input|select|textarea) [^>]*id="([^"]+)"', page.text):
        assert f'<label for="{control}">' in page.text, control


async def test_a_field_error_is_shown_beside_its_field_with_the_rest_kept(app: FastAPI) -> None:
    future = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    async with browser(app) as http:
        answer = await send(http, a_report(incident_date=future, description="   ",
                                           contact_email="not an address"))
    assert answer.status_code == 422
    page = answer.text
    assert "<title>Error: " in page
    for name, said in (("incident_date", "must not be in the future"),
                       ("description", "is required"),
                       ("contact_email", "not a valid email address")):
        beside = page.split(f'id="{name}-field"', 1)[1].split("</div>", 1)[0]
        assert f'id="{name}-error"' in beside and said in beside, name
        assert f'id="{name}"' in beside and 'aria-invalid="true"' in beside
        assert f'href="#{name}"' in page  # listed at the top too
    assert 'id="incident_date" name="incident_date" required aria-required="true" ' \
           'aria-invalid="true" autofocus' in page  # the first in error takes the focus
    assert "Synthetic Chat" in page and "parent@example.test" not in page.replace(
        'value="not an address"', "")
    assert "https://chat.example.test/room/1" in page
    assert 'value="TX" selected' in page
    assert answer.headers["cache-control"] == "no-store"


async def test_a_report_gets_a_receipt_and_travels_as_a_public_report(
        app: FastAPI, settings: Settings) -> None:
    form = a_report()
    async with browser(app) as http:
        answer = await send(http, form)
    assert answer.status_code == 200, answer.text
    report_id, code = field(answer.text, "report_id"), field(answer.text, "code")
    assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){4}", code)
    assert answer.headers["cache-control"] == "no-store"
    # The receipt tells what the reporter may know (shared/audiences.py), and the code once.
    assert set(re.findall(r'data-field="([^"]+)"', answer.text)) == PUBLIC_REPORTER_SEES | {
        "code"}
    records = await read_topic(settings, topics.REPORTS_SUBMITTED,
                               lambda rs: any(r.get("report_id") == report_id for r in rs))
    (event,) = [r for r in records if r.get("report_id") == report_id]
    assert (event["source"], event["esp_id"]) == ("public", PUBLIC_FORM)
    assert event["contact"] == {"name": "Synthetic Parent", "email": "parent@example.test",
                                "phone": "+1 555 0100"}
    assert event["report"]["location"] == {"country": "US", "us_state": "TX", "ip_address": None,
                                           "place": None}
    assert event["report"]["urls"] == ["https://chat.example.test/room/1",
                                       "https://chat.example.test/u/x"]
    assert event["report"]["reporter_email"] is None  # the contact travels apart
    # Intake keeps neither the contact details (once sent) nor the code, only its hash.
    redis = connect(settings)
    try:
        kept = str(await redis.hgetall(f"tipline:{{{report_id}}}:draft")) + str(
            await redis.hgetall(f"tipline:{{{report_id}}}:pending"))
    finally:
        await redis.aclose()
    assert "parent@example.test" not in kept and code not in kept


async def test_a_double_click_and_a_resend_make_one_report(
        app: FastAPI, settings: Settings) -> None:
    async with browser(app) as http:
        token = token_of((await http.get("/report")).text)
        form = {**a_report(), "token": token}
        first, second = await http.post("/report", data=form), await http.post("/report",
                                                                               data=form)
        edited = await http.post("/report", data={**form, "platform": "Another Chat"})
    ids = {field(r.text, "report_id") for r in (first, second, edited)}
    codes = {field(r.text, "code") for r in (first, second, edited)}
    assert len(ids) == len(codes) == 1
    assert "What you changed since was not added" in edited.text
    assert "not added" not in second.text
    (report_id,) = ids
    records = await read_topic(settings, topics.REPORTS_SUBMITTED,
                               lambda rs: any(r.get("report_id") == report_id for r in rs))
    assert {r["event_id"] for r in records if r.get("report_id") == report_id} == {
        next(r["event_id"] for r in records if r.get("report_id") == report_id)}
    assert all(r["report"]["platform"] == "Synthetic Chat" for r in records
               if r.get("report_id") == report_id)


async def test_information_is_added_with_the_receipt_and_only_with_it(
        app: FastAPI, settings: Settings) -> None:
    async with browser(app) as http:
        receipt = await send(http, a_report())
        report_id, code = field(receipt.text, "report_id"), field(receipt.text, "code")
        other = field((await send(http, a_report())).text, "report_id")
        text = f"synthetic: the user name was x-{uuid.uuid4().hex}"
        for number, given in ((report_id, "AAAA-BBBB-CCCC-DDDD-EEEE"), (other, code),
                              ("123456789", code)):
            wrong = await send(http, {"report_number": number, "code": given, "text": text},
                               "/report/add")
            assert wrong.status_code == 422
            beside = wrong.text.split('id="code-field"', 1)[1].split("</div>", 1)[0]
            assert "do not match" in beside
            assert text in wrong.text  # kept for another try
        typed = code.lower().replace("-", " ")  # as a person might type it
        added = await send(http, {"report_number": report_id, "code": typed, "text": text},
                           "/report/add")
    assert added.status_code == 200, added.text
    assert field(added.text, "report_id") == report_id
    assert set(re.findall(r'data-field="([^"]+)"', added.text)) <= PUBLIC_REPORTER_SEES
    records = await read_topic(settings, topics.REPORTS_ADDITIONS,
                               lambda rs: any(r.get("report_id") == report_id for r in rs))
    assert [r["text"] for r in records if r.get("report_id") == report_id] == [text]
    assert not [r for r in records if r["report_id"] == other]


async def test_an_esp_login_never_opens_a_public_report(app: FastAPI, settings: Settings) -> None:
    async with browser(app) as http:
        report_id = field((await send(http, a_report())).text, "report_id")
    redis = connect(settings)
    name = f"esp-{uuid.uuid4().hex[:8]}"
    login = (name, await EspRegistry(redis).add(name))
    await redis.aclose()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://intake",
                                 auth=login) as esp:
        status = await esp.get(f"/v1/reports/{report_id}")
        retract = await esp.post(f"/v1/reports/{report_id}/retract", json={"reason": "x"})
    assert status.status_code == retract.status_code == 404


async def test_too_many_forms_from_one_address_are_asked_to_wait(app: FastAPI) -> None:
    async with browser(app, "192.0.2.99") as http:
        token = token_of((await http.get("/report")).text)
        answers = [await http.post("/report", data={**a_report(), "token": token})
                   for _ in range(8)]
    async with browser(app, "192.0.2.100") as http:
        other = await send(http, a_report())
    assert [a.status_code for a in answers] == [200] * 6 + [429] * 2
    refused = answers[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert "try again" in refused.text.lower()
    assert other.status_code == 200  # another address is served


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"content-type": "application/json"}, b"{}", 415),
    ({"content-type": "application/x-www-form-urlencoded"}, b"description=" + b"x" * 70_000, 413),
    ({"content-type": "application/x-www-form-urlencoded"}, b"description=%ff%fe", 400),
])
async def test_what_no_form_sends_is_refused_with_a_page(
        app: FastAPI, headers: dict[str, str], body: bytes, status: int) -> None:
    async with browser(app) as http:
        answer = await http.post("/report", content=body, headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"]


async def test_a_form_sent_too_soon_or_forged_is_asked_for_again(
        settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Not started: these answers need only Redis, and a second intake in the consumer group
    # of the module's would make the embedded broker rebalance it for a while.
    slow = create_app(settings.model_copy(update={
        "tipline_files_dir": tmp_path_factory.mktemp("files"),
        "tipline_public_form_min_s": 600.0}))
    async with browser(slow) as http:
        soon = await send(http, a_report())
        forged = await http.post("/report", data={**a_report(), "token": "1.abc.def"})
    for answer in (soon, forged):
        assert answer.status_code == 422
        assert "send the form again" in answer.text or "send it again" in answer.text
        assert "Synthetic Chat" in answer.text  # what was typed is kept
        assert 'data-field="report_id"' not in answer.text
