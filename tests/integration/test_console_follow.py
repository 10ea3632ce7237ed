"""The console's follower on the real broker: it reads every topic from the start with no
group, shows what is sealed and signed, and never shows what is forged: it dead-letters it where
no pipeline service would (a topic only the console reads, an agency's notices)."""

import asyncio
import contextlib
import json
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from services.console.follow import Follower, Reader
from services.console.model import ReadModel
from shared import topics
from shared.agencies import AgencyRegistry
from shared.contracts import (
    AgencyNotice,
    DeadLetter,
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


async def test_the_follower_shows_the_genuine_and_dead_letters_the_forged(
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
        # Sealed by a service that may not write the topic: refused. On a topic only the
        # console reads it dead-letters it; on one supplementation consumes, supplementation does.
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
    letters: list[DeadLetter] = []

    async def dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    local = settings.model_copy(update={"tipline_keys_dir": keys})
    follower = Follower(local, model, Reader(Seals(keys), Verifier(keys / PUBLIC_FILE)),
                        AgencyRegistry(routing), dead_letter)
    task = asyncio.create_task(follower.run())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not (model.caught_up and {forged, unsigned} <= {x.key for x in letters}):
            assert asyncio.get_running_loop().time() < deadline, "the follower did not catch up"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert model.reports[genuine].state == "accepted"
    assert model.reports[genuine].agencies[agency].referral_at is not None
    assert not {forged, unsigned, theirs} & set(model.reports)
    assert theirs not in {x.key for x in letters}
    causes = {x.key: x.error for x in letters if x.key in (forged, unsigned)}
    assert "may not write" in causes[forged]
    assert "not signed" in causes[unsigned]
    assert all(x.service == "console" for x in letters)
