"""Issue 26's findings of need to know and of evidence, each tried against running processes as
`tipline up` runs them (`tipline.stack.running`: its own broker and Valkey, the services), as an
ESP, an agency, an operator or a keyless local process would, and each refused or harmless.
Loopback only; every wait is bounded.

- The ESP's status and timeline, on /ispws and /v1, hold nothing of law enforcement's side:
  analysts, holds, sources, amendments, agencies, outcomes (planted markers, all absent), and
  intake, which faces the internet, never even holds them.
- An agency's ack or outcome about a report it never received is dead-lettered with its cause.
- A restarted agency client takes no old notice as new.
- Forged dead letters requeued by an operator: refused, nothing published; a genuine letter
  goes back as its writer sealed it and is consumed.
"""

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.intake.esps import EspRegistry
from services.notification.awaiting import AwaitingAcknowledgement
from services.notification.ledger import Ledger
from services.notification.notices import notice_id
from shared import topics
from shared.analysts import AnalystDirectory
from shared.contracts import (
    AgencyNotice,
    DeadLetter,
    Location,
    Priority,
    Report,
    ReportSupplemented,
    RetractReport,
    derived_id,
)
from shared.seals import Seals
from shared.settings import Settings
from shared.signing import Signer
from shared.store import connect
from tests.e2e.support import agencies_for_services, drained, until
from tests.integration.test_pipeline import settle
from tests.ispws_support import field, report_xml
from tipline.agency import AgencyClient
from tipline.stack import Stack, running

pytestmark = pytest.mark.e2e
XML = {"content-type": "text/xml; charset=utf-8"}
PASSWORD = "synthetic-analyst-password"


@pytest.fixture(scope="module")
def agencies() -> list[str]:
    return [f"t{uuid.uuid4().hex[:6]}-{n}" for n in range(2)]


@pytest.fixture(scope="module")
def signers(agencies: list[str], tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[Stack, dict[str, Signer]]]:
    """The stack, as `tipline up` runs it, and each agency's registered response key (Texas
    reports go to both agencies, any other to the first)."""
    workdir = tmp_path_factory.mktemp("need-to-know")
    with pytest.MonkeyPatch.context() as env:
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
            env.delenv(name, raising=False)
        keys = agencies_for_services(env, workdir, agencies, keyless=(), ack_timeout_s=60,
                                     max_resends=3)
        env.setenv("TIPLINE_FILES_DIR", str(workdir / "files"))
        with running(workdir) as stack:
            yield stack, keys


@pytest.fixture(scope="module")
def system(signers: tuple[Stack, dict[str, Signer]]) -> Stack:
    return signers[0]


@pytest.fixture(scope="module")
def settings_of(system: Stack) -> Settings:
    return system.settings()


@pytest.fixture
async def esp(system: Stack, settings_of: Settings) -> AsyncIterator[httpx.AsyncClient]:
    redis = connect(settings_of)
    name = f"esp-{uuid.uuid4().hex[:8]}"
    login = (name, await EspRegistry(redis).add(name))
    await redis.aclose()
    async with httpx.AsyncClient(base_url=system.http, timeout=30, auth=login) as client:
        yield client


async def ledger_states(settings: Settings, report_id: str) -> dict[str, str]:
    """Where a report went, as the operator sees it (the notification ledger)."""
    redis = connect(settings)
    try:
        return await Ledger(redis).states(report_id)
    finally:
        await redis.aclose()


async def records(settings: Settings, topic: str, key: str, count: int,
                  ) -> list[dict[str, Any]]:
    """The JSON records of `key` on `topic` (read from the start to its end), once there are
    `count`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=20)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline, quiet = time.monotonic() + 30, 0
        while time.monotonic() < deadline and (len(found) < count or quiet < 3):
            batch = await consumer.getmany(timeout_ms=200)
            quiet = 0 if batch else quiet + 1
            for part in batch.values():
                found += [json.loads(r.value) for r in part if r.key == key.encode()]
    finally:
        await consumer.stop()
    assert len(found) >= count, f"{count} records of {key} on {topic}: {len(found)}"
    return found


# --- The ESP sees its submission and NCMEC's states, never law enforcement's side -----------


async def test_the_esp_is_told_nothing_of_analysts_agencies_or_outcomes(
    system: Stack, signers: tuple[Stack, dict[str, Signer]], settings_of: Settings,
    esp: httpx.AsyncClient, agencies: list[str],
) -> None:
    mark = {what: f"MARK-{what}-{uuid.uuid4().hex[:10]}" for what in (
        "analyst", "hold", "source", "content", "amendment", "later", "outcome")}
    redis = connect(settings_of)
    await AnalystDirectory(redis).add(mark["analyst"], PASSWORD)
    await redis.aclose()
    got: list[AgencyNotice] = []
    clients = [AgencyClient(settings_of, a, signer=signers[1][a]) for a in agencies]
    following = [asyncio.create_task(c.collect(got)) for c in clients]
    async with httpx.AsyncClient(base_url=f"{system.analyst}/v1/analyst/reports", timeout=30,
                                 auth=(mark["analyst"], PASSWORD)) as analyst:
        try:
            # Opened, held by an analyst before it is finished, worked on, released.
            report_id = field((await esp.post("/ispws/submit", content=report_xml(),
                                              headers=XML)).text, "reportId")
            held = await analyst.post(f"/{report_id}/hold", json={"reason": mark["hold"]})
            assert held.status_code == 202, held.text
            assert (await esp.post("/ispws/finish", data={"id": report_id})).status_code == 200
            await until(lambda: _held(analyst, report_id), "the report in its case file")
            for path, body in (
                ("amendments", {"path": "location.us_state", "value": "TX",
                                "reason": mark["amendment"]}),
                ("supplements", {"kind": "note", "content": mark["content"],
                                 "source": mark["source"], "verified": False}),
            ):
                added = await analyst.post(f"/{report_id}/{path}", json=body)
                assert added.status_code == 202, added.text
            released = await analyst.post(f"/{report_id}/release")
            assert sorted(released.json()["agencies"]) == sorted(agencies), released.text
            await until(lambda: _kinds(got, report_id, agencies, "referral"), "the referrals")
            later = await analyst.post(f"/{report_id}/amendments", json={
                "path": "platform", "value": "chat", "reason": mark["later"]})
            assert later.status_code == 202, later.text
            await until(lambda: _kinds(got, report_id, agencies, "amendment"), "the amendments")
            await clients[0].outcome(report_id, "note", mark["outcome"])
            # The ESP retracts it: every agency is corrected, and acknowledges.
            retract = await esp.post("/ispws/retract", data={"id": report_id, "reason": "ours"})
            assert retract.status_code == 200, retract.text
            await until(lambda: _kinds(got, report_id, agencies, "correction"), "corrections")
            outbox = AwaitingAcknowledgement(connect(settings_of), 60)

            async def all_acked() -> bool:
                states = await outbox.states(report_id)
                return len(states) == 2 * len(agencies) and set(states.values()) == {"acked"}
            await until(all_acked, "every amendment and correction acknowledged")
            await records(settings_of, topics.REPORTS_OUTCOMES, report_id, 1)
        finally:
            for task in following:
                task.cancel()
            await asyncio.gather(*following, return_exceptions=True)
    # Every service has handled all of it, then intake has recorded whatever they told it.
    await drained(settings_of, "supplementation", "referral", "referral-urgent", "referral-bulk",
                  "referral-amendments", "retraction", "retraction-acks", "intake-timeline")

    planted = [*mark.values(), *agencies]
    for path in (f"/ispws/reports/{report_id}", f"/v1/reports/{report_id}"):
        answer = await esp.get(path)
        assert answer.status_code == 200, answer.text
        status = answer.json()
        assert not [m for m in planted if m in answer.text], (path, answer.text)
        assert status["status"] == "retracted" and status["retraction"]["by"] == "esp"
        assert {e["what"] for e in status["timeline"]} == {
            "opened", "finished", "available to law enforcement", "retraction requested",
            "retracted"}, status["timeline"]
    # Intake, which faces the internet, never even held any of it.
    redis = connect(settings_of)
    kept = json.dumps(await redis.lrange(f"tipline:{{{report_id}}}:timeline", 0, -1))
    await redis.aclose()
    assert not [m for m in planted if m in kept], kept


# --- An agency answers only for what it was told --------------------------------------------


async def test_an_agency_answering_for_a_report_it_never_received_is_dead_lettered(
    signers: tuple[Stack, dict[str, Signer]], settings_of: Settings, esp: httpx.AsyncClient,
    agencies: list[str],
) -> None:
    receiver, stranger = agencies
    report = {"incident_type": "Child Sex Tourism", "reporter_email": "safety@esp.example",
              "incident_at": "2026-01-01T00:00:00+00:00",
              "location": {"country": "US", "us_state": "CA"}}  # not Texas: the first only
    report_id = (await esp.post("/v1/reports", json={"report": report})).json()["report_id"]

    async def referred() -> bool:
        return await ledger_states(settings_of, report_id) == {receiver: "referred"}
    await until(referred, "the referral to the first agency")
    text = f"MARK-{uuid.uuid4().hex}"
    keyed = {a: AgencyClient(settings_of, a, signer=signers[1][a]) for a in agencies}
    for client in keyed.values():
        await client.start()
    try:  # signed with its own registered key, about a report that never went to it
        await keyed[stranger].outcome(report_id, "closed", f"{text} suspect arrested")
        for whose in (receiver, stranger):
            await keyed[stranger].acknowledge(report_id, notice_id("referral", report_id, whose))
        await keyed[receiver].outcome(report_id, "investigating", "the one that counts")
    finally:
        for client in keyed.values():
            await client.stop()
    letters = [DeadLetter.model_validate(r)
               for r in await records(settings_of, topics.DEAD_LETTERS, report_id, 3)]
    assert {letter.service for letter in letters} == {"retraction"}
    assert all(f"{stranger} never received report {report_id}" in letter.error
               for letter in letters), [letter.error for letter in letters]
    # The receiver's outcome, sent after them on the same partition, is the one that counted.
    (outcome,) = await records(settings_of, topics.REPORTS_OUTCOMES, report_id, 1)
    assert (outcome["agency_id"], outcome["outcome"]) == (receiver, "investigating")
    assert text not in (await esp.get(f"/v1/reports/{report_id}")).text


# --- A replayed notice is not news ---------------------------------------------------------


async def test_a_restarted_agency_client_takes_no_old_referral_as_new(
    signers: tuple[Stack, dict[str, Signer]], settings_of: Settings, esp: httpx.AsyncClient,
    agencies: list[str], tmp_path: Path,
) -> None:
    agency = agencies[0]
    report = {"incident_type": "Child Sex Tourism", "reporter_email": "safety@esp.example",
              "incident_at": "2026-01-01T00:00:00+00:00",
              "location": {"country": "US", "us_state": "CA"}}  # not Texas: this agency only
    group, data = f"agency-{agency}-{uuid.uuid4().hex[:6]}", tmp_path / "agency"

    def client() -> AgencyClient:
        return AgencyClient(settings_of, agency, group, signer=signers[1][agency], data_dir=data)

    got: list[AgencyNotice] = []
    first = client()
    following = asyncio.create_task(first.collect(got))
    try:
        await first.ready()
        old = (await esp.post("/v1/reports", json={"report": report})).json()["report_id"]
        await until(lambda: _kinds(got, old, [agency], "referral"), "the referral")
        assert (await esp.post(f"/v1/reports/{old}/retract")).status_code == 202
        await until(lambda: _kinds(got, old, [agency], "correction"), "the correction")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    # While the client is down, someone who can write its topic replays the old referral, as
    # it was signed; then a new report is referred.
    (raw,) = [r for r in await records(settings_of, topics.agency_topic(agency), old, 2)
              if r["kind"] == "referral"]
    producer = AIOKafkaProducer(bootstrap_servers=settings_of.kafka_bootstrap_servers)
    await producer.start()
    await producer.send_and_wait(topics.agency_topic(agency), json.dumps(raw).encode(),
                                 key=old.encode())
    await producer.stop()
    new = (await esp.post("/v1/reports", json={"report": report})).json()["report_id"]
    got_again: list[AgencyNotice] = []
    again = client()  # restarted: the same group, the same data dir
    following = asyncio.create_task(again.collect(got_again))
    try:
        # (the replay and the new referral may be on different partitions: either comes first)
        await until(lambda: _kinds(got_again, new, [agency], "referral") and again.duplicates,
                    "the new referral and the replay")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert [(n.kind, n.report_id) for n in got_again] == [("referral", new)]
    assert again.duplicates == 1  # the replay, known from before the restart


# --- Dead letters carry evidence, not authority --------------------------------------------


async def test_forged_dead_letters_are_refused_and_a_genuine_one_goes_back_sealed_as_it_was(
    system: Stack, settings_of: Settings, esp: httpx.AsyncClient, agencies: list[str],
) -> None:
    report = {"incident_type": "Child Sex Tourism", "reporter_email": "safety@esp.example",
              "incident_at": "2026-01-01T00:00:00+00:00",
              "location": {"country": "US", "us_state": "TX"}}
    real = (await esp.post("/v1/reports", json={"report": report})).json()["report_id"]

    async def referred() -> bool:
        return set((await ledger_states(settings_of, real)).values()) == {"referred"}
    await until(referred, "the real report's referrals")
    made_up = f"made-up-{uuid.uuid4().hex[:8]}"
    retract = RetractReport(command_id=derived_id(real, "forged"), report_id=real,
                            requested_by="analyst", actor="analyst", reason="forged")
    urgent = ReportSupplemented(
        event_id=derived_id(made_up, "supplemented"), report_id=made_up, esp_id="nobody",
        report=Report(location=Location(country="US", us_state="NY")), agencies=agencies[:1],
        priority=Priority.IMMINENT, jurisdiction="forged", rules_version="forged")
    # A keyless local process writes two letters, with the words the old guard trusted.
    forged = [DeadLetter(service=service, topic=topic, partition=0, offset=0, key=key,
                         value=event.model_dump_json(), error="ValidationError: fixed since")
              for service, topic, key, event in (
                  ("retraction", topics.RETRACTIONS_REQUESTED, real, retract),
                  ("referral", topics.REPORTS_SUPPLEMENTED_URGENT, made_up, urgent))]
    # The operator's own genuine record, sealed as intake's, that retraction cannot read.
    broken = json.dumps({"command_id": uuid.uuid4().hex, "report_id": real,
                         "requested_by": "nobody"}).encode()
    seals = Seals(system.workdir / "keys")
    producer = AIOKafkaProducer(bootstrap_servers=settings_of.kafka_bootstrap_servers)
    await producer.start()
    try:
        for letter in forged:
            await producer.send_and_wait(topics.DEAD_LETTERS, letter.model_dump_json().encode(),
                                         key=(letter.key or "").encode())
        await producer.send_and_wait(topics.RETRACTIONS_REQUESTED, broken, key=real.encode(),
                                     headers=seals.headers("intake", topics.RETRACTIONS_REQUESTED,
                                                           real.encode(), broken))
    finally:
        await producer.stop()
    await records(settings_of, topics.DEAD_LETTERS, real, 2)  # the forged one, retraction's

    shown = [json.loads(line) for line in _tipline(system, "deadletters", "show").splitlines()]
    ours = {s["key"]: s for s in shown if s.get("key") == made_up}
    mine = [s for s in shown if s.get("key") == real]
    forged_at = [next(s["at"] for s in mine if s["requeue"] != "ok"), ours[made_up]["at"]]
    (genuine,) = [s for s in mine if s["requeue"] == "ok"]
    assert genuine["service"] == "retraction" and genuine["letter_seal"] == "ok"
    for at in forged_at:
        letter = next(s for s in shown if s["at"] == at)
        assert letter["letter_seal"].startswith("not sealed"), letter
        assert letter["requeue"].startswith("the letter: not sealed"), letter

    refused = _tipline(system, "deadletters", "requeue", *forged_at, genuine["at"], code=2)
    assert "nothing requeued" in refused
    assert "requeued to" in _tipline(system, "deadletters", "requeue", genuine["at"])
    # Consumed again, as its writer sealed it: retraction read it, and refused its content
    # (not its seal) a second time, from where it now is.
    letters = [DeadLetter.model_validate(r)
               for r in await records(settings_of, topics.DEAD_LETTERS, real, 3)]
    again = letters[-1]
    assert again.service == "retraction" and again.error.startswith("ValidationError")
    assert (again.partition, again.offset) != (letters[1].partition, letters[1].offset)
    assert again.seal == letters[1].seal
    # ... and it is the only record the requeues published: no forgery went anywhere.
    sent = await records(settings_of, topics.RETRACTIONS_REQUESTED, real, 2)
    assert [r.get("requested_by") for r in sent] == ["nobody", "nobody"]
    assert await records(settings_of, topics.REPORTS_SUPPLEMENTED_URGENT, made_up, 0) == []
    assert await records(settings_of, topics.agency_topic(agencies[0]), made_up, 0) == []
    # (intake hears of the referral from its own reading of the facts, not from the ledger)
    status = await settle(esp, real, lambda s: s.get("status") == "available_to_law_enforcement")
    assert status["status"] == "available_to_law_enforcement" and status["retraction"] is None


# --- helpers -------------------------------------------------------------------------------


async def _held(analyst: httpx.AsyncClient, report_id: str) -> bool:
    answer = await analyst.get(f"/{report_id}")
    return answer.status_code == 200 and answer.json()["state"] == "held"


def _kinds(got: list[AgencyNotice], report_id: str, agencies: list[str], kind: str) -> bool:
    return {n.agency_id for n in got if n.report_id == report_id and n.kind == kind} == set(
        agencies)


def _tipline(system: Stack, *args: str, code: int = 0) -> str:
    """A `tipline` command as the operator runs it on the stack's machine: its output (stderr
    when it fails)."""
    done = subprocess.run(
        [sys.executable, "-m", "tipline.cli", *args], capture_output=True, text=True,
        timeout=120, env={**system.env(), "TIPLINE_KEYS_DIR": str(Path(system.workdir) / "keys")})
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done.stdout if code == 0 else done.stderr
