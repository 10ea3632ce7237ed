"""A service asked to stop, at any moment from start-up on, is gone within its grace period:
having started at all, ending cleanly, and with nothing committed that it had not handled.

Its own broker and Valkey, so the validation group's offsets are this test's alone."""

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared import topics
from shared.contracts import Report, ReportSubmitted, derived_id
from shared.kafka import ensure_topics
from shared.seals import Seals
from shared.settings import Settings
from shared.signing import ensure_keys
from tipline.stack import Stack, free_port, start_servers

GRACE_S = 1.0
DEADLINE_S = GRACE_S + 5  # shared.service: the grace period, then five seconds more
EXIT_DEADLINE_PASSED = 70  # shared.shutdown: the hard exit


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Settings]]:
    workdir = tmp_path_factory.mktemp("shutdown")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
        env.delenv("REDIS_URL", raising=False)
        stack = Stack(kafka="", redis="", http="", workdir=workdir)
        try:
            start_servers(stack)
            ensure_keys(workdir / "keys")
            settings = stack.settings().model_copy(update={"kafka_partitions": 2})
            asyncio.run(ensure_topics(settings, [topics.REPORTS_SUBMITTED,
                                                 topics.REPORTS_VALIDATED,
                                                 topics.REPORTS_REJECTED, topics.DEAD_LETTERS]))
            yield stack, settings
        finally:
            stack.stop()


def validation(stack: Stack, settings: Settings, log: Path,
               ops_port: int = 0) -> subprocess.Popen[bytes]:
    env = {**stack.env(), "TIPLINE_SHUTDOWN_GRACE_S": str(GRACE_S),
           "TIPLINE_PUBLISH_WAIT_S": str(GRACE_S / 2), "TIPLINE_OPS_PORT": str(ops_port),
           "TIPLINE_KEYS_DIR": str(settings.tipline_keys_dir), "TIPLINE_LOG_LEVEL": "INFO",
           "OTEL_SERVICE_NAME": "validation"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.validation"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def stop(service: subprocess.Popen[bytes]) -> float:
    asked = time.monotonic()
    service.send_signal(signal.SIGTERM)
    try:
        service.wait(timeout=DEADLINE_S + 5)
    except subprocess.TimeoutExpired:
        service.kill()
        pytest.fail(f"still running {DEADLINE_S + 5} s after SIGTERM")
    return time.monotonic() - asked


@contextmanager
def killed_if_left(service: subprocess.Popen[bytes]) -> Iterator[None]:
    """A test that fails before it stops its service leaves no process behind."""
    try:
        yield
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


def wait_ready(service: subprocess.Popen[bytes], ops_port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert service.poll() is None, f"it died by itself: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{ops_port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.1)


@pytest.mark.parametrize("moment", ["loading its code", "joining its groups"])
def test_sigterm_while_starting_ends_the_process(
    own: tuple[Stack, Settings], moment: str, tmp_path: Path
) -> None:
    stack, settings = own
    log = tmp_path / "validation.log"
    service = validation(stack, settings, log, ops_port=free_port())
    with killed_if_left(service):
        if moment == "joining its groups":  # its ops endpoint serves, then subscribers start
            deadline = time.monotonic() + 30
            while "ops endpoint on" not in log.read_text():
                assert service.poll() is None, f"it died by itself: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "its ops endpoint never served"
                time.sleep(0.02)
        assert service.poll() is None, f"it died by itself: {log.read_text()[-2000:]}"
        took = stop(service)
    print(f"SIGTERM while {moment}: exit {service.returncode} in {took:.1f} s")
    # Still loading its code, the signal's default ends it (-15) before it took any work;
    # joining its groups, the deadline may end it (70); else it stops cleanly.
    assert service.returncode in {0, -signal.SIGTERM, EXIT_DEADLINE_PASSED}
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("moment", ["as soon as ready", "having handled a report"])
def test_sigterm_once_running_stops_cleanly(
    own: tuple[Stack, Settings], moment: str, tmp_path: Path
) -> None:
    """Handled a report, its subscribers are back waiting in the broker's fetch for the next
    record, however long that takes: a stop must end that wait too."""
    stack, settings = own
    log, port = tmp_path / "validation.log", free_port()
    service = validation(stack, settings, log, ops_port=port)
    with killed_if_left(service):
        wait_ready(service, port, log)
        if moment == "having handled a report":
            asyncio.run(one_report_handled(settings))
        took = stop(service)
    print(f"SIGTERM {moment}: exit {service.returncode} in {took:.1f} s")
    assert service.returncode == 0 and took < DEADLINE_S, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()


def rejectable(report_id: str) -> ReportSubmitted:
    """A report validation rejects: handled, and seen so on the rejected topic."""
    return ReportSubmitted(event_id=derived_id(report_id, "submitted"), report_id=report_id,
                           esp_id="esp", report=Report(incident_type="x"))


def from_intake(seals: Seals, event: ReportSubmitted) -> dict[str, Any]:
    """The record of `event` as intake sends it (keyed by its report, sealed)."""
    value, key = event.model_dump_json().encode(), event.report_id.encode()
    return {"value": value, "key": key,
            "headers": seals.headers("intake", topics.REPORTS_SUBMITTED, key, value)}


async def one_report_handled(settings: Settings) -> None:
    """Submit one report validation rejects, and wait for its rejection."""
    event = rejectable(f"once-{uuid.uuid4().hex[:8]}")
    key = event.report_id.encode()
    rejected = AIOKafkaConsumer(topics.REPORTS_REJECTED,
                                bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await rejected.start()
    await producer.start()
    try:
        await producer.send_and_wait(topics.REPORTS_SUBMITTED,
                                     **from_intake(Seals(settings.tipline_keys_dir), event))
        deadline = time.monotonic() + 30
        while not any(r.key == key for part in (await rejected.getmany(timeout_ms=200)).values()
                      for r in part):
            assert time.monotonic() < deadline, "the report was never handled"
    finally:
        await producer.stop()
        await rejected.stop()


def test_ready_only_once_started_with_its_collector_pauses_exported(
    own: tuple[Stack, Settings], tmp_path: Path
) -> None:
    """Ready means every subscriber started; then start-up's objects are frozen after one full
    collection, which the process's metrics count."""
    stack, settings = own
    log, port = tmp_path / "validation.log", free_port()
    service = validation(stack, settings, log, ops_port=port)
    try:
        wait_ready(service, port, log)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["checks"]["started"] == "ok"
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        full = [line for line in text.splitlines() if line.startswith(
            'tipline_gc_pause_seconds_count{generation="2",service="validation"}')]
        assert full and float(full[0].rsplit(" ", 1)[1]) >= 1, text[-3000:]
    finally:
        stop(service)


# An HTTP service whose shutdown never ends (as intake's once did, waiting on a broker that was
# away): served as shared.service serves intake, with a deadline of one second.
_STUCK_APP = """
import asyncio, contextlib, logging, sys
import uvicorn
from fastapi import FastAPI
from shared.shutdown import Server

@contextlib.asynccontextmanager
async def lifespan(app):
    yield
    await stuck_in_shutdown()

async def stuck_in_shutdown():
    await asyncio.Event().wait()

logging.basicConfig(stream=sys.stderr, level=logging.INFO)
server = Server(uvicorn.Config(FastAPI(lifespan=lifespan), port=int(sys.argv[1]),
                               log_level="warning"), exit_within=1.0)
asyncio.run(server.serve())
"""


def test_an_http_service_stuck_stopping_exits_at_its_deadline_saying_where(
    tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "stuck.log"
    with log.open("wb") as out:
        service = subprocess.Popen([sys.executable, "-c", _STUCK_APP, str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not _answers(port):
        assert service.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    took = stop(service)
    said = log.read_text()
    print(f"exit {service.returncode} in {took:.1f} s")
    assert service.returncode == EXIT_DEADLINE_PASSED and took < 1.0 + 3, said
    assert "did not stop within 1 s" in said and "stuck_in_shutdown" in said, said


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except httpx.HTTPError:
        return False


async def test_a_stop_mid_stream_commits_only_what_was_handled(
    own: tuple[Stack, Settings], tmp_path: Path
) -> None:
    stack, settings = own
    run = uuid.uuid4().hex[:6]
    events = [rejectable(f"{run}-{n}") for n in range(12000)]
    seals = Seals(settings.tipline_keys_dir)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        sends = []
        for event in events:
            sends.append(await producer.send(topics.REPORTS_SUBMITTED,
                                             **from_intake(seals, event)))
        placed = {e.report_id: (await s) for e, s in zip(events, sends, strict=True)}
    finally:
        await producer.stop()
    # What validation handled: the rejections it published (each before its batch's commit).
    rejected = AIOKafkaConsumer(topics.REPORTS_REJECTED,
                                bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await rejected.start()
    handled: set[str] = set()

    async def follow() -> set[str]:
        for part in (await rejected.getmany(timeout_ms=100)).values():
            handled.update(r.key.decode() for r in part if r.key and r.key.decode() in placed)
        return handled

    try:
        service = validation(stack, settings, tmp_path / "validation.log")
        deadline = time.monotonic() + 60
        while not await follow():
            assert time.monotonic() < deadline, "nothing handled"
        stop(service)  # mid-stream: most of the 12,000 not handled yet
        assert service.returncode == 0
        committed = await committed_offsets(settings)
        # Every rejection published before the stop: read to the topic's end as it is now.
        ends = await rejected.end_offsets(list(rejected.assignment()))
        deadline = time.monotonic() + 60
        while any([await rejected.position(tp) < end for tp, end in ends.items()]):
            assert time.monotonic() < deadline, "the rejections not read to their end"
            await follow()
        below = [r for r, meta in placed.items()
                 if meta.offset < committed.get(TopicPartition(meta.topic, meta.partition), 0)]
        print(f"stopped with {len(handled)} of {len(events)} handled, {len(below)} committed")
        assert below and set(below) <= handled, "committed past what was handled"
        # And nothing handled left uncommitted: the batch in hand's commit, and those still on
        # their way (shared.batches.Commits), were awaited before the consumer stopped.
        assert handled <= set(below), f"{len(handled - set(below))} handled, not committed"
        assert len(handled) < len(events), "not stopped mid-stream: the test proves nothing"
        # Started again, it goes on from its commit: every report handled in the end.
        service = validation(stack, settings, tmp_path / "validation.log")
        deadline = time.monotonic() + 90
        while len(await follow()) < len(events):
            assert time.monotonic() < deadline, "not every report was handled after a restart"
        stop(service)
    finally:
        await rejected.stop()


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id="validation", enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topics.REPORTS_SUBMITTED) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topics.REPORTS_SUBMITTED) or set()
        out = {}
        for p in parts:
            tp = TopicPartition(topics.REPORTS_SUBMITTED, p)
            out[tp] = await consumer.committed(tp) or 0
        return out
    finally:
        await consumer.stop()
