"""The console's follower on the real broker: it reads every topic with no group into its own
SQLite store, shows what is sealed and signed, keeps its own refusal of what is forged where no
pipeline service would dead-letter it (it writes nothing to Kafka; the dead-letter topics are the
internal consumers' and intake's), counts every refusal, resumes from its checkpoint after a
restart, and moves a store of another history aside."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from services.console.follow import Follower, Reader
from services.console.queries import Queries
from services.console.store import Store
from services.console.web import Live
from shared import topics
from shared.agencies import AgencyRegistry
from shared.contracts import (
    AgencyNotice,
    ReferralPayload,
    Report,
    ReportClosed,
    ReportValidated,
    now,
)
from shared.kafka import ensure_topics
from shared.seals import Seals
from shared.settings import Settings
from shared.signing import PUBLIC_FILE, Signer, Verifier, ensure_keys
from tests.integration.agency_helpers import agency_ids, routing_file
from tests.sealing import send_sealed

REFERRAL = ReferralPayload(esp_id="esp", report=Report(), jurisdiction="TX", rules_version="v")


def validated(report_id: str) -> ReportValidated:
    return ReportValidated(event_id=f"v-{report_id}", report_id=report_id, esp_id="esp-c",
                           report=Report())


def counted(topic: str) -> float:
    return REGISTRY.get_sample_value("tipline_records_refused_total",
                                     {"service": "console", "topic": topic}) or 0.0


async def follow_until(follower: Follower, done: Callable[[], bool], what: str) -> None:
    task = asyncio.create_task(follower.run())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not (follower.live.caught_up and done()):
            assert not task.done(), f"the follower stopped: {task.exception()}"
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_follower_shows_the_genuine_keeps_its_refusals_and_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    ensure_keys(keys)
    (agency,) = agency_ids(1)
    routing = routing_file(tmp_path / "routing.yaml", [agency])
    await ensure_topics(settings, [*topics.PIPELINE_TOPICS, topics.agency_topic(agency)])
    genuine, forged, unsigned, theirs, later = (f"console-{uuid.uuid4().hex[:10]}-{n}"
                                                for n in range(5))
    local = settings.model_copy(update={"tipline_keys_dir": keys})
    reader = Reader(Seals(keys), Verifier(keys / PUBLIC_FILE))
    registry = AgencyRegistry(routing)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await send_sealed(producer, keys, "validation", topics.REPORTS_VALIDATED,
                          validated(genuine), genuine)
        # Sealed by a service that may not write the topic: refused. On a topic only the
        # console reads (an analyst's closing) it keeps its refusal; on one supplementation
        # consumes, supplementation dead-letters it and the console only leaves it out.
        await send_sealed(producer, keys, "intake", topics.REPORTS_CLOSED, ReportClosed(
            event_id=f"c-{forged}", report_id=forged, analyst_id="a-1",
            reason="synthetic"), forged)
        await send_sealed(producer, keys, "intake", topics.REPORTS_VALIDATED,
                          validated(theirs), theirs)
        signed = Signer(keys).sign(AgencyNotice(
            kind="referral", notice_id=f"n-{genuine}", report_id=genuine, agency_id=agency,
            issued_at=now(),
        payload=REFERRAL).model_dump(mode="json"))
        await producer.send_and_wait(topics.agency_topic(agency), json.dumps(signed).encode(),
                                     key=genuine.encode())
        bare = AgencyNotice(kind="referral", notice_id=f"n-{unsigned}", report_id=unsigned,
                            agency_id=agency, issued_at=now(),
        payload=REFERRAL)
        await producer.send_and_wait(topics.agency_topic(agency),
                                     bare.model_dump_json().encode(), key=unsigned.encode())

        watched = (topics.REPORTS_CLOSED, topics.REPORTS_VALIDATED, topics.agency_topic(agency))
        before = {t: counted(t) for t in watched}
        store = Store(tmp_path / "console")
        first = Follower(local, store, Live(), reader, registry)
        await follow_until(first, lambda: store.db.execute(
            "SELECT 1 FROM reports WHERE report_id = ?", (genuine,)).fetchone() is not None,
            "the genuine report")
        q = Queries(store.db, now().timestamp(), 300, 3)
        shown = q.report(genuine)
        assert shown is not None and shown.state == "accepted"
        assert shown.agencies[agency].referral_at is not None
        assert not any(q.report(r) for r in (forged, unsigned, theirs))
        refused = q.letters(1, service="console", size=1000)
        refusals = {x.letter.key: x.letter for x in refused.rows}
        assert "may not write" in refusals[forged].cause
        assert "not signed" in refusals[unsigned].cause
        assert theirs not in refusals  # supplementation's to dead-letter, not the console's
        # Every refusal counted: the unsigned notice exactly (the agency's topic is new). The
        # internal topics also hold earlier tests' records, sealed with the session's keys,
        # which this follower does not hold: counted too.
        agency_topic = topics.agency_topic(agency)
        assert counted(agency_topic) == before[agency_topic] + 1
        assert all(counted(t) >= before[t] + 1 for t in watched), {t: counted(t) for t in watched}
        checkpoint = store.positions()
        assert any(t == topics.REPORTS_VALIDATED and n > 0 for (t, _), n in checkpoint.items())
        store.close()

        # A restart resumes from the checkpoint: only what came after is read.
        await send_sealed(producer, keys, "validation", topics.REPORTS_VALIDATED,
                          validated(later), later)
        store = Store(tmp_path / "console")
        second = Follower(local, store, Live(), reader, registry)
        await follow_until(second, lambda: store.db.execute(
            "SELECT 1 FROM reports WHERE report_id = ?", (later,)).fetchone() is not None,
            "the later report")
        assert 1 <= second.applied < first.applied, (second.applied, first.applied)
        assert second.applied <= 5  # the later record (and whatever else came meanwhile)
        again = Queries(store.db, now().timestamp(), 300, 3).letters(1, service="console")
        assert again.total == refused.total, "a restart kept its refusals once"

        # A checkpoint past the end of a topic: the store was filled from another history.
        store.db.execute("UPDATE offsets SET next = 1000000000 WHERE topic = ?",
                         (topics.agency_topic(agency),))
        store.close()
        store = Store(tmp_path / "console")
        third = Follower(local, store, Live(), reader, registry)
        await follow_until(third, lambda: store.db.execute(
            "SELECT 1 FROM reports WHERE report_id = ?", (genuine,)).fetchone() is not None,
            "the rebuilt store")
        assert list((tmp_path / "console").glob("console.db.*.aside")), "moved aside, kept"
        assert third.applied >= first.applied  # read from the start again
        store.close()
    finally:
        await producer.stop()
