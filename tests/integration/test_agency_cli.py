"""`tipline agency list` and `tipline agency tail` follow the stack `tipline up` runs in
TIPLINE_WORKDIR: its routing copy (a key registered for every agency), its broker, its keys; and
tail's acks are signed with the key `tipline up` made for the agency, so they count."""

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from shared import topics
from shared.agencies import load_agencies
from shared.contracts import AgencyNotice, ReferralPayload, Report, now
from shared.kafka import ensure_topics
from shared.settings import Settings
from shared.signing import Signer
from tests.integration.agency_helpers import read_topic
from tipline.stack import Stack, routing, signing_keys
from tipline.status import save_state

CLI = [sys.executable, "-c", "from tipline.cli import main; raise SystemExit(main())"]

REFERRAL = ReferralPayload(esp_id="esp", report=Report(), jurisdiction="TX", rules_version="v")


def stack_in(workdir: Path, settings: Settings) -> Stack:
    """A workdir as `tipline up` leaves it: stack.json, its routing copy, its keys."""
    stack = Stack(kafka=settings.kafka_bootstrap_servers, redis=settings.redis_url, http="",
                  workdir=workdir)
    save_state(workdir, stack)
    return stack


def environment(workdir: Path) -> dict[str, str]:
    """A shell with nothing but TIPLINE_WORKDIR to say where the stack is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIPLINE_", "KAFKA_"))}
    return {**env, "TIPLINE_WORKDIR": str(workdir)}


async def test_agency_list_reads_the_stacks_routing_copy(tmp_path: Path,
                                                         settings: Settings) -> None:
    stack_in(tmp_path, settings)
    listing = await asyncio.create_subprocess_exec(
        *CLI, "agency", "list", env=environment(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(listing.communicate(), 60)
    assert listing.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert not [line for line in lines if "UNABLE TO ACK" in line]
    assert lines[0] == f"agencies of {tmp_path / 'routing.yaml'}"
    agencies = load_agencies(tmp_path / "routing.yaml")
    assert len(lines) == 1 + len(agencies) >= 9
    assert all("1 key(s)" in line for line in lines[1:])


async def test_agency_tail_follows_the_stacks_broker_and_signs_with_its_key(
        tmp_path: Path, settings: Settings) -> None:
    stack = stack_in(tmp_path, settings)
    agency = "icac-tx"
    await ensure_topics(settings, [topics.agency_topic(agency), topics.AGENCY_ACKS])
    tail = await asyncio.create_subprocess_exec(
        *CLI, "agency", "tail", agency, "--group", f"cli-{uuid.uuid4().hex[:8]}",
        env=environment(tmp_path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    report_id = f"cli-{uuid.uuid4().hex[:10]}"
    notice = Signer(signing_keys(stack)).sign(AgencyNotice(
        kind="referral", notice_id=f"n-{report_id}", report_id=report_id, agency_id=agency,
        issued_at=now(),
        payload=REFERRAL).model_dump(mode="json"))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topics.agency_topic(agency), json.dumps(notice).encode(),
                                     key=report_id.encode())
    finally:
        await producer.stop()
    try:
        assert tail.stdout is not None
        while True:
            line = await asyncio.wait_for(tail.stdout.readline(), 60)
            assert line, "tail ended without printing the notice"
            if json.loads(line)["notice_id"] == f"n-{report_id}":
                break
        acks = await read_topic(settings, topics.AGENCY_ACKS, lambda rs: any(
            r.get("notice_id") == f"n-{report_id}" for r in rs))
    finally:
        tail.terminate()
        await tail.wait()
    (ack,) = [r for r in acks if r.get("notice_id") == f"n-{report_id}"]
    registered = load_agencies(routing(stack))[agency].verifier()
    assert registered is not None
    registered.verify(ack)  # signed with the key the routing copy registered for it
