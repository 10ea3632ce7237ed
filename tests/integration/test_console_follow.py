"""The console's follower on the real broker: it reads every topic from the start with no
group, shows what is sealed and signed, and never shows what is forged: it counts and logs it,
and writes nothing (the dead-letter topics are the internal consumers' and intake's)."""

import asyncio
import contextlib
import json
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from services.console.follow import Follower, Reader
from services.console.model import ReadModel
from shared import topics
from shared.agencies import AgencyRegistry
from shared.contracts import (
    AgencyNotice,
    Report,
    ReportReferred,
    ReportValidated,
    now,
)
from shared.kafka import ensure_topics
from shared.seals import Seals
from shared.settings import Settings
from shared.signing import PUBLIC_FILE, Signer, Verifier, ensure_keys
from tests.integration.agency_helpers import agency_ids, routing_file
from tests.sealing import send_sealed


def refused(topic: str) -> float:
    return REGISTRY.get_sample_value("tipline_records_refused_total",
                                     {"service": "console", "topic": topic}) or 0.0


async def test_the_follower_shows_the_genuine_and_counts_the_forged(
    settings: Settings, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    ensure_keys(keys)
    (agency,) = agency_ids(1)
    routing = routing_file(tmp_path / "routing.yaml", [agency])
    await ensure_topics(settings, [*topics.PIPELINE_TOPICS, topics.agency_topic(agency)])
    genuine, forged, unsigned, theirs = (f"console-{uuid.uuid4().hex[:10]}-{n}"
                                         for n in range(4))

    def validated(report_id: str) -> ReportValidated:
        return ReportValidated(event_id=f"v-{report_id}", report_id=report_id, esp_id="esp-c",
                               report=Report())

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await send_sealed(producer, keys, "validation", topics.REPORTS_VALIDATED,
                          validated(genuine), genuine)
        # Sealed by a service that may not write the topic: refused, counted, never shown.
        await send_sealed(producer, keys, "intake", topics.REPORTS_REFERRED, ReportReferred(
            event_id=f"r-{forged}", report_id=forged, agencies=[agency]), forged)
        await send_sealed(producer, keys, "intake", topics.REPORTS_VALIDATED,
                          validated(theirs), theirs)
        signed = Signer(keys).sign(AgencyNotice(
            kind="referral", notice_id=f"n-{genuine}", report_id=genuine, agency_id=agency,
            issued_at=now()).model_dump(mode="json"))
        await producer.send_and_wait(topics.agency_topic(agency), json.dumps(signed).encode(),
                                     key=genuine.encode())
        bare = AgencyNotice(kind="referral", notice_id=f"n-{unsigned}", report_id=unsigned,
                            agency_id=agency, issued_at=now())
        await producer.send_and_wait(topics.agency_topic(agency),
                                     bare.model_dump_json().encode(), key=unsigned.encode())
    finally:
        await producer.stop()

    model = ReadModel()
    watched = (topics.REPORTS_REFERRED, topics.REPORTS_VALIDATED, topics.agency_topic(agency))
    before = {t: refused(t) for t in watched}
    local = settings.model_copy(update={"tipline_keys_dir": keys})
    follower = Follower(local, model, Reader(Seals(keys), Verifier(keys / PUBLIC_FILE)),
                        AgencyRegistry(routing))
    task = asyncio.create_task(follower.run())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not model.caught_up:
            assert asyncio.get_running_loop().time() < deadline, "the follower did not catch up"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert model.reports[genuine].state == "accepted"
    assert model.reports[genuine].agencies[agency].referral_at is not None
    assert not {forged, unsigned, theirs} & set(model.reports)
    # Counted: the unsigned notice exactly (the agency's topic is new). The internal topics
    # also hold earlier tests' records, sealed with the session's keys, which this follower
    # does not hold: counted too.
    assert refused(topics.agency_topic(agency)) == before[topics.agency_topic(agency)] + 1
    assert all(refused(t) >= before[t] + 1 for t in watched), {t: refused(t) for t in watched}
