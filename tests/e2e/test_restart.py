"""`tipline up` stopped and started again on the same workdir: the broker's state and Valkey's
are kept together, or neither is. On Apache Kafka both are: a report referred before the restart
is still on its agencies' topics and in its timeline after. The embedded broker keeps nothing, so
Valkey starts empty with it: no report is left in Valkey without its topics (an orphan), and the
previous Valkey data is kept aside, not deleted."""

import asyncio
import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from shared.agencies import load_agencies
from shared.audiences import Kind
from shared.kafka import kafka_client_options, topic_partitions
from shared.topics import agency_topic
from tests.apache_support import require_apache_kafka
from tests.e2e.test_demo import TIPLINE, alive, children_of, clean_env
from tipline.stack import free_port
from tipline.status import tool_settings
from tipline.synthetic import expected_agencies, synthetic_report

pytestmark = pytest.mark.e2e


def up(tmp_path: Path, port: int, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`tipline up` in the background, once it says it is up; and what it said."""
    process = subprocess.Popen([*TIPLINE, "up", "--port", str(port), *args],
                               env=clean_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    said = []
    assert process.stdout is not None
    try:
        for line in process.stdout:  # bounded: it prints a few dozen lines, then waits
            said.append(line)
            if "tipline is up" in line or "stopped unexpectedly" in line or len(said) > 200:
                break
        assert "tipline is up" in "".join(said), "".join(said)[-3000:]
    except BaseException:
        stop(process)
        raise
    return process, "".join(said)


def stop(process: subprocess.Popen[str]) -> None:
    family = children_of(process.pid)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=90)
    deadline = time.monotonic() + 30
    while alive(family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(family), f"left behind: {alive(family)}"


def esp_login(workdir: Path) -> tuple[str, str]:
    logins = json.loads((workdir / "esp-logins.json").read_text())
    return "demo-esp", logins["demo-esp"]


def refer(base: str, workdir: Path, seed: int) -> tuple[str, frozenset[str], dict[str, Any]]:
    """A synthetic report, submitted and awaited until its ESP is told it is available to law
    enforcement and every agency it names has its referral on its topic; returns its id, its
    agencies and its status as the ESP sees it."""
    report = synthetic_report(random.Random(seed), valid=True)
    agencies = expected_agencies(report)
    with httpx.Client(base_url=base, auth=esp_login(workdir), timeout=30) as http:
        answer = http.post("/v1/reports", json={"report": report})
        answer.raise_for_status()
        report_id = answer.json()["report_id"]
        deadline = time.monotonic() + 120
        while not (referred_to(workdir, report_id) >= agencies and Kind.AVAILABLE in {
                e["what"] for e in http.get(f"/v1/reports/{report_id}").json()["timeline"]}):
            assert time.monotonic() < deadline, http.get(f"/v1/reports/{report_id}").json()
            time.sleep(0.2)
        return report_id, agencies, http.get(f"/v1/reports/{report_id}").json()


def referred_to(workdir: Path, report_id: str) -> set[str]:
    """The agencies whose topic holds a referral of this report."""
    return {a for a in load_agencies(tool_settings(workdir).tipline_routing_file)
            if any(n["report_id"] == report_id and n["kind"] == "referral"
                   for n in asyncio.run(notices_on(workdir, a)))}


async def notices_on(workdir: Path, agency_id: str) -> list[dict[str, Any]]:
    """Every notice on an agency's topic, from its beginning, read as the stack's admin."""
    settings = tool_settings(workdir)
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await topic_partitions(settings, [agency_topic(agency_id)])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[dict[str, Any]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found += [json.loads(r.value) for r in records]
        return found
    finally:
        await consumer.stop()


@pytest.mark.timeout(900)
def test_a_restart_on_apache_kafka_loses_nothing(tmp_path: Path) -> None:
    require_apache_kafka()
    workdir, port = tmp_path / "stack", free_port()
    process, _ = up(tmp_path, port, "--kafka", "apache")
    try:
        report_id, agencies, before = refer(f"http://127.0.0.1:{port}", workdir, 1)
    finally:
        stop(process)

    process, said = up(tmp_path, port, "--kafka", "apache")
    try:
        assert "previous data" not in said  # nothing was moved aside
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=esp_login(workdir),
                          timeout=30) as http:
            after = http.get(f"/v1/reports/{report_id}").json()
        assert after["status"] == before["status"] == "available_to_law_enforcement"
        assert [e for e in before["timeline"] if e not in after["timeline"]] == []
        assert referred_to(workdir, report_id) == agencies
        # ... and the pipeline goes on where it was.
        assert refer(f"http://127.0.0.1:{port}", workdir, 2)[0] != report_id
    finally:
        stop(process)


@pytest.mark.timeout(600)
def test_a_restart_on_the_embedded_broker_leaves_no_orphan(tmp_path: Path) -> None:
    workdir, port = tmp_path / "stack", free_port()
    process, first = up(tmp_path, port)
    try:
        report_id, _, _ = refer(f"http://127.0.0.1:{port}", workdir, 1)
    finally:
        stop(process)
    assert "previous data" not in first  # a first start has nothing to set aside

    process, said = up(tmp_path, port)
    try:
        # Valkey started empty with the broker, and said so in one line ...
        (line,) = [s for s in said.splitlines() if "previous data" in s]
        assert "the embedded broker keeps nothing, so Valkey starts empty too" in line
        aside = Path(line.rsplit(" ", 1)[1])
        assert aside.parent == workdir / "previous"
        assert list((aside / "valkey").glob("appendonlydir/*.aof"))  # moved, not deleted
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=esp_login(workdir),
                          timeout=30) as http:
            assert http.get(f"/v1/reports/{report_id}").status_code == 404
        # ... and works: a new report is referred.
        assert refer(f"http://127.0.0.1:{port}", workdir, 2)[0] != report_id
    finally:
        stop(process)
