"""Reports from the public, end to end, against every service running as `tipline up` runs them
(`tipline.stack.running`: its own broker, its own Valkey with each service's ACL user, the six
services as separate processes), at DEBUG: someone with no account files through the form, an
analyst triages on the analyst API, agencies follow their topics with the reference client.

- A public report is held (in the triage queue), released by an analyst, referred to the
  agencies its location routes to, then retracted by the analyst: every agency gets its
  correction. What the reporter adds with the receipt reaches the analyst's case file.
- A report closed as not actionable is never referred: a later report, released after it was
  closed, is referred; once every service has caught up, nothing of the closed one is on the
  referral topics, in the ledger, or at any agency. The console (its store, fed by its follower)
  shows both in its triage queue while they wait, then the closed one closed, from the public.
- The reporter's contact details reach an agency only when an analyst shares them, and no log
  line of any service, at DEBUG (nor the description, nor what the reporter added).
Loopback only; every wait is bounded.
"""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.console import sessions
from services.notification.ledger import Ledger
from shared import topics
from shared.analysts import AnalystDirectory
from shared.contracts import AgencyNotice
from shared.settings import Settings
from shared.store import connect
from tests.e2e.support import agencies_for_services, drained, until
from tipline.agency import AgencyClient
from tipline.stack import Stack, running

pytestmark = pytest.mark.e2e
PASSWORD = "synthetic-triage-password"
FORM_MIN_S = 0.1  # the form's least time (3 s by default: the browser test keeps that; too
# soon is tests/integration/test_public_form.py's)


@pytest.fixture(scope="module")
def agencies() -> list[str]:
    return [f"t{uuid.uuid4().hex[:6]}-{n}" for n in range(2)]


@pytest.fixture(scope="module")
def system(agencies: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, as `tipline up` runs it, at DEBUG (Texas reports go to both agencies, any
    other to the first)."""
    workdir = tmp_path_factory.mktemp("public-reports")
    with pytest.MonkeyPatch.context() as env:
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
            env.delenv(name, raising=False)
        agencies_for_services(env, workdir, agencies, keyless=(), ack_timeout_s=60,
                              max_resends=3)
        env.setenv("TIPLINE_FILES_DIR", str(workdir / "files"))
        env.setenv("TIPLINE_LOG_LEVEL", "DEBUG")  # the most a service ever logs
        env.setenv("TIPLINE_LOG_FORMAT", "json")
        env.setenv("TIPLINE_PUBLIC_FORM_MIN_S", str(FORM_MIN_S))
        with running(workdir) as stack:
            yield stack


@pytest.fixture(scope="module")
def settings_of(system: Stack) -> Settings:
    return system.settings()  # the operator's login to the stack's Valkey


@pytest.fixture
async def analyst(system: Stack, settings_of: Settings) -> AsyncIterator[httpx.AsyncClient]:
    name = f"analyst-{uuid.uuid4().hex[:6]}"
    redis = connect(settings_of)
    await AnalystDirectory(redis).add(name, PASSWORD)
    await redis.aclose()
    async with httpx.AsyncClient(base_url=f"{system.analyst}/v1/analyst", timeout=30,
                                 auth=(name, PASSWORD)) as client:
        yield client


@pytest.fixture
async def console(system: Stack, settings_of: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Signed in to the console as an operator, asking pages' `<main>` as the live script does."""
    name = f"operator-{uuid.uuid4().hex[:6]}"
    redis = connect(settings_of)
    await AnalystDirectory(redis).add(name, PASSWORD, role="operator")
    await redis.aclose()
    async with httpx.AsyncClient(base_url=system.console, timeout=30) as browser:
        answer = await browser.post("/login", data={"analyst_id": name, "password": PASSWORD},
                                    headers={"Origin": system.console})
        assert answer.status_code == 303, answer.text
        cookie = answer.cookies[sessions.COOKIE]
    async with httpx.AsyncClient(base_url=system.console, timeout=30,
                                 cookies={sessions.COOKIE: cookie},
                                 headers={"X-Console-Fragment": "1"}) as client:
        yield client


async def in_console_triage(console: httpx.AsyncClient, report_id: str) -> bool:
    page = await console.get("/triage")
    assert page.status_code == 200, page.text
    return f'data-report="{report_id}"' in page.text


@dataclass
class Agencies:
    """Each agency's reference client, following its topic; what each received."""

    got: list[AgencyNotice]

    def of(self, report_id: str, kind: str) -> set[str]:
        return {n.agency_id for n in self.got if n.report_id == report_id and n.kind == kind}


@pytest.fixture
async def following(settings_of: Settings, agencies: list[str]) -> AsyncIterator[Agencies]:
    got: list[AgencyNotice] = []
    clients = [AgencyClient(settings_of, a, f"agency-{a}-{uuid.uuid4().hex[:6]}")
               for a in agencies]
    tasks = [asyncio.create_task(c.collect(got)) for c in clients]
    try:
        for client in clients:
            await client.ready()
        yield Agencies(got)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def a_form(text: str, **changes: str) -> dict[str, str]:
    return {"incident_type": "Online Enticement of Children for Sexual Acts",
            "incident_date": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
            "description": f"synthetic: {text}", "urls": "https://chat.example.test/r/1",
            "platform": "Synthetic Chat", "country": "", "us_state": "TX", "place": "",
            "contact_name": "", "contact_email": "", "contact_phone": "", **changes}


def shown(page: str, name: str) -> str:
    match = re.search(rf'data-field="{name}">([^<]*)<', page)
    assert match, page
    return unescape(match.group(1))


async def file(system: Stack, form: dict[str, str], path: str = "/report") -> str:
    """What someone with no account does: open the form, fill it in, send it; the page."""
    async with httpx.AsyncClient(base_url=system.http, timeout=30) as browser:
        page = await browser.get(path)
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert token, page.text
        await asyncio.sleep(FORM_MIN_S + 0.05)  # a person fills it in
        answer = await browser.post(path, data={**form, "token": unescape(token.group(1))})
    assert answer.status_code == 200, answer.text
    return answer.text


async def case_of(analyst: httpx.AsyncClient, report_id: str) -> dict[str, Any]:
    answer = await analyst.get(f"/reports/{report_id}")
    return answer.json() if answer.status_code == 200 else {}


async def in_triage(analyst: httpx.AsyncClient, report_id: str) -> bool:
    queue = (await analyst.get("/triage", params={"limit": 200})).json()["reports"]
    return report_id in [r["report_id"] for r in queue]


async def test_a_public_report_is_held_released_referred_then_retracted_and_corrected(
        system: Stack, settings_of: Settings, analyst: httpx.AsyncClient,
        following: Agencies, agencies: list[str]) -> None:
    receipt = await file(system, a_form("a stranger asked a child to meet"))
    report_id, code = shown(receipt, "report_id"), shown(receipt, "code")
    # Held for triage: in the queue, and the case says so.
    await until(lambda: in_triage(analyst, report_id), "the report in the triage queue", 60)
    case = await case_of(analyst, report_id)
    assert (case["state"], case["source"]) == ("held", "public")

    added = await file(system, {"report_number": report_id, "code": code,
                                "text": "synthetic: the account was x-42"}, "/report/add")
    assert shown(added, "report_id") == report_id

    async def addition_kept() -> bool:
        return [a["text"] for a in (await case_of(analyst, report_id))["additions"]] == [
            "synthetic: the account was x-42"]
    await until(addition_kept, "the reporter's addition in the case file")

    released = await analyst.post(f"/reports/{report_id}/release")
    assert released.status_code == 202, released.text
    assert sorted(released.json()["agencies"]) == sorted(agencies)  # Texas: both
    await until(lambda: following.of(report_id, "referral") == set(agencies), "the referrals",
                60)
    referral = next(n for n in following.got if n.report_id == report_id)
    assert referral.payload.kind == "referral"
    assert (referral.payload.source, referral.payload.esp_id) == ("public", None)
    assert referral.payload.report.urls == ["https://chat.example.test/r/1"]
    assert not await in_triage(analyst, report_id)

    retracted = await analyst.post(f"/reports/{report_id}/retract",
                                   json={"reason": "synthetic: the analyst found it mistaken"})
    assert retracted.status_code == 202, retracted.text
    await until(lambda: following.of(report_id, "correction") == set(agencies),
                "the corrections", 60)
    for notice in (n for n in following.got if n.report_id == report_id
                   and n.kind == "correction"):
        assert notice.payload.kind == "correction"
        assert notice.payload.requested_by == "analyst"
        assert notice.payload.corrects_notice_id == next(
            n.notice_id for n in following.got if n.report_id == report_id
            and n.kind == "referral" and n.agency_id == notice.agency_id)


async def read_to_end(settings: Settings, names: list[str]) -> list[tuple[str, bytes | None]]:
    """(topic, key) of every record on these topics, from the start to their end as they are."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # the cluster's metadata: every topic's partitions
        parts = [TopicPartition(t, p) for t in names
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: list[tuple[str, bytes | None]] = []
        left = {p for p in parts if ends[p] > 0}
        while left:
            for part, batch in (await consumer.getmany(timeout_ms=500)).items():
                found += [(part.topic, r.key) for r in batch]
            left = {p for p in left if await consumer.position(p) < ends[p]}
        return found
    finally:
        await consumer.stop()


async def test_a_report_closed_as_not_actionable_is_never_referred(
        system: Stack, settings_of: Settings, analyst: httpx.AsyncClient,
        following: Agencies, agencies: list[str], console: httpx.AsyncClient) -> None:
    closed = shown(await file(system, a_form("nothing anyone could act on")), "report_id")
    later = shown(await file(system, a_form("a later report")), "report_id")
    for report_id in (closed, later):
        await until(lambda r=report_id: in_triage(analyst, r), "both in triage", 60)
        await until(lambda r=report_id: in_console_triage(console, r),
                    "both in the console's triage queue", 60)
    answer = await analyst.post(f"/reports/{closed}/close",
                                json={"reason": "synthetic: not actionable"})
    assert answer.status_code == 202, answer.text
    assert (await analyst.post(f"/reports/{closed}/release")).status_code == 409
    assert (await analyst.post(f"/reports/{later}/release")).status_code == 202
    # The later report, released after the closing, reaches both agencies ...
    await until(lambda: following.of(later, "referral") == set(agencies), "the later referral",
                60)
    # ... and once every service has handled all it was given, the closed one went nowhere.
    await drained(settings_of, "supplementation", "referral", "referral-urgent",
                  "referral-bulk")
    referral_topics = [topics.REPORTS_SUPPLEMENTED, topics.REPORTS_SUPPLEMENTED_URGENT,
                       topics.REPORTS_SUPPLEMENTED_BULK, topics.REPORTS_REFERRED,
                       *(topics.agency_topic(a) for a in agencies)]
    keys = {key for _, key in await read_to_end(settings_of, referral_topics)}
    assert later.encode() in keys and closed.encode() not in keys
    redis = connect(settings_of)
    try:
        assert await Ledger(redis).states(closed) == {}
        # (referral marks the ledger once its send is acknowledged; intake tells the ESP
        # from its own reading of the facts: either may come first)
        async def confirmed() -> bool:
            return set((await Ledger(redis).states(later)).values()) == {"referred"}
        await until(confirmed, "the ledger to confirm the later referral")
    finally:
        await redis.aclose()
    assert not [n for n in following.got if n.report_id == closed]
    case = await case_of(analyst, closed)
    assert case["state"] == "closed" and case["report"]["additional_info"].endswith(
        "nothing anyone could act on")  # kept, never deleted
    closing = await read_to_end(settings_of, [topics.REPORTS_CLOSED])
    assert (topics.REPORTS_CLOSED, closed.encode()) in closing
    # The console: the closed one closed, from the public, out of its queue; the later released.
    async def console_says_closed() -> str:
        page = await console.get(f"/reports/{closed}")
        return page.text if 'data-state="closed"' in page.text else ""

    page = await until(console_says_closed, "the console showing the report closed", 60)
    assert 'class="badge public"' in page and "closed as not actionable" in page
    async def console_says_referred() -> bool:
        return 'data-state="referred"' in (await console.get(f"/reports/{later}")).text

    await until(console_says_referred, "the console showing the later one referred", 60)
    assert not await in_console_triage(console, closed)
    assert not await in_console_triage(console, later)


async def test_contact_details_reach_agencies_only_when_shared_and_no_log(
        system: Stack, settings_of: Settings, analyst: httpx.AsyncClient,
        following: Agencies, agencies: list[str]) -> None:
    mark = uuid.uuid4().hex[:10]
    planted = {"name": f"MARKNAME{mark}", "email": f"mark{mark}@example.test",
               "phone": f"+1 555 {int(mark, 16) % 10**7:07d}",
               "description": f"MARKDESC{mark}", "addition": f"MARKADD{mark}"}
    contact = {"contact_name": planted["name"], "contact_email": planted["email"],
               "contact_phone": planted["phone"]}
    kept_back = await file(system, a_form(planted["description"], **contact))
    shared = await file(system, a_form("a report whose reporter may be called", **contact))
    private_id, shared_id = shown(kept_back, "report_id"), shown(shared, "report_id")
    await file(system, {"report_number": private_id, "code": shown(kept_back, "code"),
                        "text": planted["addition"]}, "/report/add")
    for report_id in (private_id, shared_id):
        await until(lambda r=report_id: in_triage(analyst, r), "both in triage", 60)
    case = await case_of(analyst, private_id)
    assert case["contact"] == {"name": planted["name"], "email": planted["email"],
                               "phone": planted["phone"]}  # the analyst sees them
    assert (await analyst.post(f"/reports/{shared_id}/share-contact")).status_code == 202
    for report_id in (private_id, shared_id):
        assert (await analyst.post(f"/reports/{report_id}/release")).status_code == 202
        await until(lambda r=report_id: following.of(r, "referral") == set(agencies),
                    "the referrals", 60)

    def notices(report_id: str) -> str:
        return " ".join(n.model_dump_json() for n in following.got if n.report_id == report_id)
    contact_marks = [planted[k] for k in ("name", "email", "phone")]
    assert not [m for m in contact_marks if m in notices(private_id)]
    assert all(m in notices(shared_id) for m in contact_marks)
    assert planted["description"] in notices(private_id)  # the report itself goes

    # Every service has handled everything it was given; then no log line holds any of it.
    await drained(settings_of, "validation", "supplementation", "supplementation-additions",
                  "referral", "intake-timeline")
    logs = {path.name: path.read_text(errors="replace")
            for path in (system.workdir / "logs").glob("*.log")}
    assert {"intake.log", "validation.log", "supplementation.log", "referral.log",
            "retraction.log", "console.log"} <= set(logs)
    assert any('"level": "DEBUG"' in text or '"level":"DEBUG"' in text
               for text in logs.values()), "the services log at DEBUG"
    assert private_id in logs["intake.log"]  # its request was logged, by id only
    leaked = {name: [m for m in planted.values() if m in text] for name, text in logs.items()}
    assert not any(leaked.values()), leaked
