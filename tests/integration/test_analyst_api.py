"""The analyst API in-process, on the real broker and Redis: authentication, holds, amendments
beside the ESP's original, supplements with provenance, and amendments after referral."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from services.intake.timeline import Timeline
from services.notification.awaiting import AwaitingAcknowledgement
from services.notification.flow import NotificationFlow
from services.notification.ledger import Ledger
from services.notification.referrals import Retract
from services.supplementation.main import create_app
from shared import topics
from shared.analysts import AnalystDirectory
from shared.batches import Publisher
from shared.contracts import (
    PUBLIC_FORM,
    AmendReport,
    Location,
    Report,
    ReporterContact,
    ReportSupplemented,
    ReportValidated,
    Source,
    derived_id,
    now,
)
from shared.settings import Settings
from shared.signing import PUBLIC_FILE, Signer, Verifier, ensure_keys
from shared.topics import agency_topic
from tests.integration.agency_helpers import agency_ids, read_topic, routing_file
from tipline.stack import free_port

PASSWORD = "synthetic-analyst-password"


@dataclass
class Api:
    http: httpx.AsyncClient
    app: object
    settings: Settings
    agencies: list[str]
    analyst: str


@pytest.fixture
async def api(settings: Settings, redis: Redis, tmp_path: Path) -> AsyncIterator[Api]:
    agencies = agency_ids(3)
    ensure_keys(tmp_path / "keys")
    local = settings.model_copy(update={
        "tipline_keys_dir": tmp_path / "keys",
        "tipline_routing_file": routing_file(tmp_path / "routing.yaml", agencies),
    })
    app = create_app(local)
    broker = app.broker
    assert broker is not None  # the service's app is made with its broker
    await broker.connect()  # publish only: this test drives the consumer's work itself
    analyst = f"analyst-{uuid.uuid4().hex[:6]}"
    await AnalystDirectory(redis).add(analyst, PASSWORD)
    transport = httpx.ASGITransport(app=app.analyst_api)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://analyst",
                                 auth=(analyst, PASSWORD)) as http:
        yield Api(http, app, local, agencies, analyst)
    await broker.stop()


def texas_report() -> Report:
    return Report(incident_type="Child Sex Tourism", location=Location(country="US", us_state="TX"),
                  additional_info="synthetic text " + uuid.uuid4().hex)


async def arrive(api: Api, report_id: str, report: Report, source: Source = "esp",
                 contact: ReporterContact | None = None) -> str:
    """What the validated-report consumer does, driven directly."""
    analysis = api.app.analyst_api.state.analysis  # type: ignore[attr-defined]
    event = ReportValidated(event_id=derived_id(report_id, "validated"), report_id=report_id,
                            esp_id="esp-test" if source == "esp" else PUBLIC_FORM,
                            report=report, source=source, contact=contact)
    (arrived,) = await analysis.cases.arrive([(event, None)])
    if arrived.case is not None:
        await analysis.releaser.publish_cases({report_id: arrived.case})
    return arrived.state


async def test_only_analysts_get_in(api: Api) -> None:
    path = "/v1/analyst/reports/nothing-here"
    assert (await api.http.get(path)).status_code == 404
    for auth in [None, (api.analyst, "wrong password!!"), ("esp-test", PASSWORD)]:
        response = await api.http.get(path, auth=auth) if auth else await httpx.AsyncClient(
            transport=api.http._transport, base_url="http://analyst").get(path)
        assert response.status_code == 401, auth
        assert response.headers["www-authenticate"].startswith("Basic")


async def test_hold_amend_supplement_release(api: Api, settings: Settings) -> None:
    report_id = f"an-{uuid.uuid4().hex}"
    hold = await api.http.post(f"/v1/analyst/reports/{report_id}/hold",
                               json={"reason": "checking the location"})
    assert hold.status_code == 202, hold.text
    report = texas_report()
    assert await arrive(api, report_id, report) == "held"

    bad = await api.http.post(f"/v1/analyst/reports/{report_id}/amendments",
                              json={"path": "location.planet", "value": "x", "reason": "r"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "path"]
    bad = await api.http.post(f"/v1/analyst/reports/{report_id}/amendments",
                              json={"path": "incident_at", "value": "not a date", "reason": "r"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "value"]

    amended = await api.http.post(
        f"/v1/analyst/reports/{report_id}/amendments",
        json={"path": "child_in_imminent_danger", "value": True, "reason": "open-source check"})
    assert amended.status_code == 202, amended.text
    assert amended.json()["amendment"]["previous"] is False
    supplement = await api.http.post(
        f"/v1/analyst/reports/{report_id}/supplements",
        json={"kind": "geolocation", "content": {"lat": 31.0, "lon": -100.0},
              "source": "synthetic geo lookup", "verified": False})
    assert supplement.status_code == 202, supplement.text

    released = await api.http.post(f"/v1/analyst/reports/{report_id}/release")
    assert released.status_code == 202, released.text
    assert sorted(released.json()["agencies"]) == sorted(api.agencies)
    again = await api.http.post(f"/v1/analyst/reports/{report_id}/hold", json={"reason": "late"})
    assert again.status_code == 409

    # The amendment made it imminent: it went on the urgent topic, the original beside it.
    records = await read_topic(settings, topics.REPORTS_SUPPLEMENTED_URGENT,
                               lambda rs: any(r["report_id"] == report_id for r in rs))
    event = ReportSupplemented.model_validate(
        next(r for r in records if r["report_id"] == report_id))
    assert event.report == report  # the ESP's original, untouched
    assert event.amendments[0].path == "child_in_imminent_danger"
    assert event.amendments[0].analyst_id == api.analyst
    assert event.supplements[0].verified is False
    assert event.priority.name == "IMMINENT"

    case = (await api.http.get(f"/v1/analyst/reports/{report_id}")).json()
    assert case["state"] == "released"
    # None of the analyst's steps goes to the report's timeline: intake keeps the ESP's view,
    # and the ESP sees nothing of analysts (shared/audiences.py; the facts sent are checked in
    # tests/unit/test_audiences.py and against running processes in tests/e2e).


class Referral:
    """The referral service's steps, driven in this process over the real broker and Redis."""

    def __init__(self, api: Api, redis: Redis) -> None:
        self.ledger, self.timeline = Ledger(redis), Timeline(redis)
        self.awaiting = AwaitingAcknowledgement(redis, api.settings.tipline_ack_timeout_s)
        self.flow = NotificationFlow(
            Publisher(api.app.broker), self.ledger, self.timeline,  # type: ignore[attr-defined]
            Signer(api.settings.tipline_keys_dir), self.awaiting)

    async def refer(self, event: ReportSupplemented) -> None:
        await self.flow.refer([event])

    async def amend(self, settings: Settings, report_id: str, count: int) -> None:
        """What the analyst API asked for this report (AmendReport), one at a time, in order."""
        records = await read_topic(
            settings, topics.AMENDMENTS_REQUESTED,
            lambda rs: sum(r["report_id"] == report_id for r in rs) >= count)
        for record in (r for r in records if r["report_id"] == report_id):
            await self.flow.amend([AmendReport.model_validate(record)])


async def supplemented(api: Api, settings: Settings, report_id: str) -> ReportSupplemented:
    records = await read_topic(settings, topics.REPORTS_SUPPLEMENTED,
                               lambda rs: any(r["report_id"] == report_id for r in rs))
    return ReportSupplemented.model_validate(
        next(r for r in records if r["report_id"] == report_id))


async def referred(api: Api, settings: Settings, redis: Redis) -> tuple[str, Referral]:
    """A report released on arrival and referred to its agencies."""
    report_id = f"an-{uuid.uuid4().hex}"
    assert await arrive(api, report_id, texas_report()) == "released"
    referral = Referral(api, redis)
    await referral.refer(await supplemented(api, settings, report_id))
    return report_id, referral


async def test_amendment_after_referral_reaches_every_agency_after_its_referral(
    api: Api, settings: Settings, redis: Redis
) -> None:
    report_id, referral = await referred(api, settings, redis)

    response = await api.http.post(
        f"/v1/analyst/reports/{report_id}/supplements",
        json={"kind": "open_source", "content": "synthetic finding", "source": "forum archive",
              "verified": False})
    assert response.status_code == 202, response.text
    assert response.json()["version"] == 1
    assert response.json()["status"] == "amendment requested"
    response = await api.http.post(
        f"/v1/analyst/reports/{report_id}/amendments",
        json={"path": "location.us_state", "value": "CA", "reason": "ESP mislabelled state"})
    assert response.json()["version"] == 2
    await referral.amend(settings, report_id, 2)

    verifier = Verifier(api.settings.tipline_keys_dir / PUBLIC_FILE)
    for agency in api.agencies:
        notices = await read_topic(
            settings, agency_topic(agency),
            lambda rs: sum(r["report_id"] == report_id for r in rs) >= 3)
        mine = [n for n in notices if n["report_id"] == report_id]
        assert [n["kind"] for n in mine] == ["referral", "amendment", "amendment"]
        assert [n["payload"].get("version") for n in mine] == [None, 1, 2]
        for n in mine:
            verifier.verify(n)
        assert mine[1]["payload"]["supplement"]["label"] == "UNVERIFIED"
        assert mine[2]["payload"]["amendment"]["previous"] == "TX"
    # Not re-routed: the amendment moved the state, the agencies stay.
    assert sorted(await referral.ledger.states(report_id)) == sorted(api.agencies)
    acks = await referral.awaiting.states(report_id)
    assert len(acks) == 2 * len(api.agencies) and set(acks.values()) == {"awaiting"}
    case = (await api.http.get(f"/v1/analyst/reports/{report_id}")).json()
    assert [sorted(c) for c in case["amendments_after_release"]] == [["supplement"],
                                                                     ["amendment"]]
    assert case["amendments_unsent"] == []


async def test_a_change_is_kept_while_the_broker_is_away_and_sent_with_the_next(
    api: Api, settings: Settings
) -> None:
    report_id = f"an-{uuid.uuid4().hex}"
    assert await arrive(api, report_id, texas_report()) == "released"
    # A copy of the API whose broker is away (nothing listens there), on the same Redis.
    away = create_app(api.settings.model_copy(update={
        "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}))
    change = {"path": "incident_type", "value": "Child Sex Trafficking", "reason": "checked"}
    async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=away.analyst_api),  # type: ignore[attr-defined]
            base_url="http://analyst", auth=(api.analyst, PASSWORD)) as http:
        response = await http.post(f"/v1/analyst/reports/{report_id}/amendments", json=change)
    assert response.status_code == 503
    assert "kept as version 1" in response.json()["detail"]
    case = (await api.http.get(f"/v1/analyst/reports/{report_id}")).json()
    assert case["amendments_unsent"] == [1]

    response = await api.http.post(f"/v1/analyst/reports/{report_id}/amendments",
                                   json={**change, "reason": "checked again"})
    assert response.status_code == 202 and response.json()["version"] == 2
    records = await read_topic(settings, topics.AMENDMENTS_REQUESTED,
                               lambda rs: sum(r["report_id"] == report_id for r in rs) >= 2)
    assert [r["version"] for r in records if r["report_id"] == report_id] == [1, 2]
    case = (await api.http.get(f"/v1/analyst/reports/{report_id}")).json()
    assert case["amendments_unsent"] == []


async def test_a_retraction_asked_while_the_broker_is_away_is_refused_then_taken_once(
    api: Api, settings: Settings
) -> None:
    """The analyst's door to retraction keeps nothing of its own: 202 only once the broker has
    the command, 503 with Retry-After before that, and asking again is the same retraction."""
    report_id = f"an-{uuid.uuid4().hex}"
    assert await arrive(api, report_id, texas_report()) == "released"
    away = create_app(api.settings.model_copy(update={
        "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}))
    body = {"reason": "filed by mistake"}
    async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=away.analyst_api),  # type: ignore[attr-defined]
            base_url="http://analyst", auth=(api.analyst, PASSWORD)) as http:
        response = await http.post(f"/v1/analyst/reports/{report_id}/retract", json=body)
    assert response.status_code == 503 and response.headers["retry-after"], response.text
    assert "retry" in response.json()["detail"]

    for _ in range(2):  # the analyst asks again, then once more
        response = await api.http.post(f"/v1/analyst/reports/{report_id}/retract", json=body)
        assert response.status_code == 202, response.text
    records = await read_topic(settings, topics.RETRACTIONS_REQUESTED,
                               lambda rs: sum(r["report_id"] == report_id for r in rs) >= 2)
    asked = [r for r in records if r["report_id"] == report_id]
    assert {r["command_id"] for r in asked} == {asked[0]["command_id"]}
    assert {(r["requested_by"], r["actor"]) for r in asked} == {("analyst", api.analyst)}


async def test_a_retracted_report_is_not_amended(
    api: Api, settings: Settings, redis: Redis
) -> None:
    report_id, referral = await referred(api, settings, redis)
    # An amendment asked for just before the retraction lands: kept, sent to nobody.
    response = await api.http.post(
        f"/v1/analyst/reports/{report_id}/amendments",
        json={"path": "incident_type", "value": "Child Sex Trafficking", "reason": "late"})
    assert response.status_code == 202
    await referral.ledger.retract({report_id: Retract(now().isoformat(), "esp", "esp-test", "r")})
    await referral.amend(settings, report_id, 1)
    assert await referral.awaiting.states(report_id) == {}
    entries = await referral.timeline.entries(report_id)
    assert "amendment withheld" in [e["what"] for e in entries]

    # Once ReportRetracted reaches supplementation (its subscriber's step, run here; the e2e
    # test runs the real one), the API refuses further changes.
    analysis = api.app.analyst_api.state.analysis  # type: ignore[attr-defined]
    await analysis.cases.retracted([report_id])
    response = await api.http.post(
        f"/v1/analyst/reports/{report_id}/amendments",
        json={"path": "incident_type", "value": "Child Sex Trafficking", "reason": "later"})
    assert response.status_code == 409
    assert "retracted" in response.json()["detail"]


async def test_new_rules_go_live_without_restart_but_never_reroute_a_released_report(
    api: Api,
) -> None:
    analysis = api.app.analyst_api.state.analysis  # type: ignore[attr-defined]
    live = analysis.releaser.rules
    live.check_every_s = 0
    released = f"an-{uuid.uuid4().hex}"
    assert await arrive(api, released, texas_report()) == "released"

    # New rules (a new version) send Texas to the first agency only.
    path = api.settings.tipline_routing_file
    path.write_text(path.read_text().replace(
        f"TX: [{', '.join(api.agencies)}]", f"TX: [{api.agencies[0]}]").replace(
        'version: "', 'version: "v2-'))
    later = f"an-{uuid.uuid4().hex}"
    assert await arrive(api, later, texas_report()) == "released"
    case = await analysis.cases.get(later)
    assert case is not None and case.routing is not None
    assert case.routing.agencies == [api.agencies[0]]

    (again,) = await analysis.releaser.release([released])  # a redelivery under new rules
    assert sorted(again.agencies) == sorted(api.agencies)
    assert again.rules_version != live.current.version


async def test_a_release_cut_short_says_when_to_try_again_and_its_retry_finishes_it(
    api: Api, settings: Settings
) -> None:
    """The broker away in the middle of a release (503) leaves the case releasing: a hold or an
    amendment meanwhile is told to try again (409 with Retry-After, never a bare 409 an analyst
    would take as final), and the analyst's retry of the release finishes it."""
    report_id = f"an-{uuid.uuid4().hex}"
    hold = await api.http.post(f"/v1/analyst/reports/{report_id}/hold", json={"reason": "r"})
    assert hold.status_code == 202, hold.text
    assert await arrive(api, report_id, texas_report()) == "held"
    analysis = api.app.analyst_api.state.analysis  # type: ignore[attr-defined]
    assert await analysis.cases.begin_release(report_id) == "releasing"  # then the broker went

    for answer in (
        await api.http.post(f"/v1/analyst/reports/{report_id}/hold", json={"reason": "r"}),
        await api.http.post(f"/v1/analyst/reports/{report_id}/amendments",
                            json={"path": "child_in_imminent_danger", "value": True,
                                  "reason": "r"})):
        assert answer.status_code == 409 and answer.headers["retry-after"] == "1", answer.text
    released = await api.http.post(f"/v1/analyst/reports/{report_id}/release")
    assert released.status_code == 202 and released.json()["state"] == "released"


# --- reports from the public: triage --------------------------------------------------------

CONTACT = ReporterContact(name="Synthetic Parent", email="parent@example.test",
                          phone="+1 555 0100")


async def test_a_public_report_waits_in_triage_until_an_analyst_releases_it(
    api: Api, settings: Settings, redis: Redis
) -> None:
    first, second = f"pub-{uuid.uuid4().hex}", f"pub-{uuid.uuid4().hex}"
    assert await arrive(api, first, texas_report(), "public", CONTACT) == "held"
    assert await arrive(api, second, texas_report(), "public") == "held"
    assert await arrive(api, first, texas_report(), "public", CONTACT) == "held"  # redelivered

    queue = (await api.http.get("/v1/analyst/triage", params={"limit": 200})).json()["reports"]
    mine = [r for r in queue if r["report_id"] in (first, second)]
    assert [r["report_id"] for r in mine] == [first, second]  # oldest first, each once
    assert [r["contact_given"] for r in mine] == [True, False]
    assert [r["arrived_at"] for r in queue] == sorted(r["arrived_at"] for r in queue)

    case = (await api.http.get(f"/v1/analyst/reports/{first}")).json()
    assert (case["state"], case["source"]) == ("held", "public")
    assert case["contact"] == CONTACT.model_dump(exclude_none=True)

    released = await api.http.post(f"/v1/analyst/reports/{first}/release")
    assert released.status_code == 202, released.text
    event = await supplemented(api, settings, first)
    assert event.source == "public" and event.supplements == []  # no contact unless shared
    queue = (await api.http.get("/v1/analyst/triage", params={"limit": 200})).json()["reports"]
    assert first not in [r["report_id"] for r in queue]
    assert second in [r["report_id"] for r in queue]

    referral = Referral(api, redis)
    await referral.refer(event)
    notices = await read_topic(settings, agency_topic(api.agencies[0]),
                               lambda rs: any(r["report_id"] == first for r in rs))
    (notice,) = [n for n in notices if n["report_id"] == first]
    assert (notice["payload"]["source"], notice["payload"]["esp_id"]) == ("public", None)
    assert "Synthetic Parent" not in str(notice)


async def test_a_closed_report_is_never_released_and_is_kept(
    api: Api, settings: Settings
) -> None:
    report_id = f"pub-{uuid.uuid4().hex}"
    assert await arrive(api, report_id, texas_report(), "public") == "held"
    closed = await api.http.post(f"/v1/analyst/reports/{report_id}/close",
                                 json={"reason": "synthetic: nothing to act on"})
    assert closed.status_code == 202, closed.text
    again = await api.http.post(f"/v1/analyst/reports/{report_id}/close",
                                json={"reason": "a second opinion"})
    assert again.status_code == 202  # closed already: the first closing stays
    for step, body in (("release", None), ("hold", {"reason": "look again"})):
        refused = await api.http.post(f"/v1/analyst/reports/{report_id}/{step}", json=body)
        assert refused.status_code == 409, (step, refused.text)
    assert await arrive(api, report_id, texas_report(), "public") == "closed"  # redelivered

    case = (await api.http.get(f"/v1/analyst/reports/{report_id}")).json()
    assert case["state"] == "closed" and case["report"] is not None
    assert case["closed"]["reason"] == "synthetic: nothing to act on"
    records = await read_topic(settings, topics.REPORTS_CLOSED,
                               lambda rs: sum(r["report_id"] == report_id for r in rs) >= 2)
    assert {r["event_id"] for r in records if r["report_id"] == report_id} == {
        derived_id(report_id, "closed")}
    queue = (await api.http.get("/v1/analyst/triage", params={"limit": 200})).json()["reports"]
    assert report_id not in [r["report_id"] for r in queue]

    released = f"an-{uuid.uuid4().hex}"  # only a held report can be closed
    assert await arrive(api, released, texas_report()) == "released"
    refused = await api.http.post(f"/v1/analyst/reports/{released}/close",
                                  json={"reason": "too late"})
    assert refused.status_code == 409


async def test_contact_details_go_to_agencies_only_once_shared(
    api: Api, settings: Settings, redis: Redis
) -> None:
    report_id = f"pub-{uuid.uuid4().hex}"
    assert await arrive(api, report_id, texas_report(), "public", CONTACT) == "held"
    forged = await api.http.post(f"/v1/analyst/reports/{report_id}/supplements", json={
        "kind": "reporter_contact", "content": "x", "source": "s", "verified": True})
    assert forged.status_code == 422  # only share-contact shares them

    shared = await api.http.post(f"/v1/analyst/reports/{report_id}/share-contact")
    assert shared.status_code == 202, shared.text
    twice = await api.http.post(f"/v1/analyst/reports/{report_id}/share-contact")
    assert twice.status_code == 409
    assert (await api.http.post(f"/v1/analyst/reports/{report_id}/release")).status_code == 202
    event = await supplemented(api, settings, report_id)
    (supplement,) = event.supplements
    assert supplement.kind == "reporter_contact" and supplement.analyst_id == api.analyst
    assert supplement.content == CONTACT.model_dump(exclude_none=True)

    # An operator reads the case, but not the reporter's contact details.
    operator = f"operator-{uuid.uuid4().hex[:6]}"
    await AnalystDirectory(redis).add(operator, PASSWORD, role="operator")
    seen = (await api.http.get(f"/v1/analyst/reports/{report_id}",
                               auth=(operator, PASSWORD))).json()
    assert seen["contact"] == seen["supplements"][0]["content"] == "withheld: analysts only"
    assert "parent@example.test" not in str(seen)

    none = f"pub-{uuid.uuid4().hex}"
    assert await arrive(api, none, texas_report(), "public") == "held"
    assert (await api.http.post(f"/v1/analyst/reports/{none}/share-contact")).status_code == 409
