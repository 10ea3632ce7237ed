"""Kafka transport security against the embedded broker, as far as it goes.

TLS: Tansu 0.6.0 cannot serve TLS itself (`--cert` and `--key` cannot be given together, and its
TLS acceptor is built and never used), so stunnel terminates TLS in front of it and the broker
advertises stunnel's port. Through it, the pipeline's own clients (`kafka_client_options`), a
service's FastStream broker (`make_broker`) and a whole service process run over TLS; a plaintext
client and a client trusting another CA are refused.

SASL: `tansu broker --authentication` refuses a client without SASL, but it cannot accept one
with SASL either: its only storage in this build keeps no SCRAM credentials, so every SCRAM
exchange ends in `e=unknown-user` (and 0.6.0 has no ACLs at all). So the test checks what can be
seen: our settings make the client run a SCRAM-SHA-512 exchange as the configured user, on the
wire. Positive SCRAM and ACL checks need Apache Kafka (docker-compose.yml; tests/deploy).
"""

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import SecretStr

from shared import topics
from shared.contracts import Report, ReportSubmitted, derived_id
from shared.kafka import consumer_options, ensure_topics, kafka_client_options, make_broker
from shared.settings import Settings
from shared.signing import ensure_keys
from tests.sealing import send_sealed
from tests.tls_support import LOOPBACK, Pki, make_pki, stunnel, stunnel_binary, tansu, valkey
from tipline import credentials
from tipline.stack import Stack, free_port

FAST: dict[str, Any] = {"kafka_session_timeout_ms": 1000, "kafka_heartbeat_interval_ms": 100,
                        "kafka_fetch_max_wait_ms": 5}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Pki, str]]:
    """A fresh embedded broker behind stunnel: (stack, pki, TLS bootstrap address)."""
    stunnel_binary()  # skips, saying why, where stunnel is missing and cannot be installed
    workdir = tmp_path_factory.mktemp("kafka-tls")
    stack = Stack(kafka="", redis="", http="", workdir=workdir)
    try:
        pki = make_pki(workdir / "pki")
        tls_port = free_port()
        raw_port = tansu(stack, advertised=tls_port)
        stunnel(stack, "kafka-tls", pki, accept=tls_port, connect=raw_port)
        yield stack, pki, f"{LOOPBACK}:{tls_port}"
    finally:
        stack.stop()


def tls_settings(bootstrap: str, ca: Path, **more: Any) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, kafka_security_protocol="SSL",
                    kafka_ssl_ca_file=ca, **FAST, **more)


async def produce_and_consume(settings: Settings, topic: str, value: bytes) -> bytes:
    producer = AIOKafkaProducer(**kafka_client_options(settings), request_timeout_ms=5000)
    await asyncio.wait_for(producer.start(), 15)
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **kafka_client_options(settings),
                                group_id=f"tls-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", session_timeout_ms=1000,
                                heartbeat_interval_ms=100, fetch_max_wait_ms=5)
    await asyncio.wait_for(consumer.start(), 15)
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert record.value is not None
    return record.value


async def test_the_pipelines_clients_produce_and_consume_over_tls(
    tls: tuple[Stack, Pki, str],
) -> None:
    _, pki, bootstrap = tls
    settings = tls_settings(bootstrap, pki.ca)
    assert kafka_client_options(settings)["security_protocol"] == "SSL"
    await ensure_topics(settings, ["tls.clients"])  # the admin client, over TLS too
    assert await produce_and_consume(settings, "tls.clients", b"over tls") == b"over tls"


async def test_a_service_broker_publishes_and_consumes_over_tls(
    tls: tuple[Stack, Pki, str], tmp_path: Path,
) -> None:
    _, pki, bootstrap = tls
    keys = tmp_path / "keys"
    ensure_keys(keys)
    settings = tls_settings(bootstrap, pki.ca, tipline_keys_dir=keys)
    await ensure_topics(settings, ["tls.service"])
    broker = make_broker(settings, "validation")
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @broker.subscriber("tls.service", **consumer_options(settings, "tls-service"))
    async def handle(body: dict[str, Any]) -> None:
        await got.put(body)

    await asyncio.wait_for(broker.start(), 20)
    try:
        await broker.publish({"hello": "tls"}, "tls.service", key=b"r1")
        assert await asyncio.wait_for(got.get(), 20) == {"hello": "tls"}
    finally:
        await broker.stop()


async def refused(settings: Settings) -> BaseException:
    """What starting a producer with these settings raises (it must raise, and soon)."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), request_timeout_ms=3000)
    try:
        await asyncio.wait_for(producer.start(), 15)
    except (KafkaError, OSError, KeyError, TimeoutError) as exc:
        return exc
    finally:
        await producer.stop()
    raise AssertionError("the client connected")


async def test_plaintext_and_a_wrong_ca_are_refused(tls: tuple[Stack, Pki, str]) -> None:
    _, pki, bootstrap = tls
    plain = await refused(Settings(kafka_bootstrap_servers=bootstrap))
    assert isinstance(plain, KafkaConnectionError), repr(plain)
    wrong_ca = await refused(tls_settings(bootstrap, pki.other_ca))
    assert isinstance(wrong_ca, KafkaConnectionError), repr(wrong_ca)
    # The system's CAs do not know the test CA either: no silent fallback to them.
    system = await refused(Settings(kafka_bootstrap_servers=bootstrap,
                                    kafka_security_protocol="SSL"))
    assert isinstance(system, KafkaConnectionError), repr(system)


VALID = {
    "incident_type": "Child Sex Tourism",
    "incident_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
    "reporter_email": "tls@esp.example",
    "location": {"country": "US", "us_state": "TX"},
}


@pytest.fixture
def validation_over_tls(
    tls: tuple[Stack, Pki, str], tmp_path: Path,
) -> Iterator[tuple[Settings, Path]]:
    """`python -m services.validation` with Kafka over TLS, and Redis over TLS (Valkey behind
    stunnel) as its own ACL user from the file `tipline deploy secrets` writes."""
    _, pki, bootstrap = tls
    keys = tmp_path / "keys"
    ensure_keys(keys)
    credentials.write_all(tmp_path / "secrets")
    password = credentials.ensure_passwords(tmp_path / "secrets", [])["redis"]["validation"]
    stack = Stack(kafka=bootstrap, redis="", http="", workdir=tmp_path)
    try:
        redis_plain = valkey(stack, f'aclfile "{tmp_path / "secrets" / "redis.acl"}"')
        redis_tls = free_port()
        stunnel(stack, "redis-tls", pki, accept=redis_tls, connect=redis_plain)
        settings = tls_settings(bootstrap, pki.ca, tipline_keys_dir=keys)
        asyncio.run(ensure_topics(settings, [
            topics.REPORTS_SUBMITTED, topics.REPORTS_DRAFTS, topics.REPORTS_VALIDATED,
            topics.REPORTS_REJECTED, topics.RETRACTIONS_REQUESTED, topics.DEAD_LETTERS]))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_"))}
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CA_FILE": str(pki.ca),
            "KAFKA_SESSION_TIMEOUT_MS": "1000", "KAFKA_HEARTBEAT_INTERVAL_MS": "100",
            "KAFKA_FETCH_MAX_WAIT_MS": "5",
            "REDIS_URL": f"rediss://{LOOPBACK}:{redis_tls}/0",
            "REDIS_USERNAME": "validation", "REDIS_PASSWORD": password,
            "REDIS_SSL_CA_FILE": str(pki.ca),
            "TIPLINE_KEYS_DIR": str(keys), "TIPLINE_OPS_PORT": "0", "OTEL_SERVICE_NAME":
            "validation", "TIPLINE_LOG_FORMAT": "text",
        })
        child = stack.spawn("validation", [sys.executable, "-m", "services.validation"], env=env)
        yield settings, keys
        assert child.process.poll() is None, child.log and child.log.read_text()[-3000:]
    finally:
        stack.stop()


async def test_a_service_process_handles_an_event_over_tls(
    validation_over_tls: tuple[Settings, Path],
) -> None:
    settings, keys = validation_over_tls
    report_id = f"tls-{uuid.uuid4().hex[:8]}"
    event = ReportSubmitted(event_id=derived_id(report_id, "submitted"), report_id=report_id,
                            esp_id="esp-tls", report=Report.model_validate(VALID))
    consumer = AIOKafkaConsumer(topics.REPORTS_VALIDATED, **kafka_client_options(settings),
                                group_id=f"tls-{report_id}", auto_offset_reset="earliest",
                                session_timeout_ms=1000, heartbeat_interval_ms=100,
                                fetch_max_wait_ms=5)
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await asyncio.wait_for(asyncio.gather(consumer.start(), producer.start()), 20)
    try:
        await send_sealed(producer, keys, "intake", topics.REPORTS_SUBMITTED, event, report_id)
        deadline = asyncio.get_running_loop().time() + 45
        validated = None
        while validated is None and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key == report_id.encode():
                        validated = json.loads(record.value or b"{}")
        assert validated is not None, "validation did not publish the report over TLS"
        assert validated["report_id"] == report_id
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


class Recorder:
    """A loopback TCP relay that keeps every byte each way (the SASL exchange is in the clear)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.sent = bytearray()
        self.received = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._relays: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> "Recorder":
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self._relays, return_exceptions=True), 5)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._relays.append(asyncio.create_task(self._relay(reader, writer)))

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       into: bytearray) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    into.extend(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, self.sent),
                             pipe(up_reader, writer, self.received))


@pytest.fixture(scope="module")
def authenticating_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`tansu broker --authentication` on loopback; its port."""
    stack = Stack(kafka="", redis="", http="", workdir=tmp_path_factory.mktemp("kafka-sasl"))
    try:
        yield tansu(stack, authentication=True)
    finally:
        stack.stop()


async def test_a_client_without_sasl_is_refused(authenticating_broker: int) -> None:
    exc = await refused(Settings(kafka_bootstrap_servers=f"{LOOPBACK}:{authenticating_broker}"))
    assert isinstance(exc, KafkaConnectionError), repr(exc)  # "Unable to bootstrap"


async def test_our_sasl_settings_run_a_scram_exchange_as_the_configured_user(
    authenticating_broker: int,
) -> None:
    async with Recorder(authenticating_broker) as wire:
        settings = Settings(
            kafka_bootstrap_servers=f"{LOOPBACK}:{wire.port}",
            kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="validation",
            kafka_sasl_password=SecretStr("synthetic-sasl-password"))
        exc = await refused(settings)
    # The handshake names SCRAM-SHA-512; the client-first message names our user; the password
    # never crosses the wire (SCRAM sends a proof).
    assert b"SCRAM-SHA-512" in wire.sent
    assert b"n,,n=validation,r=" in wire.sent
    assert b"synthetic-sasl-password" not in wire.sent
    # Tansu 0.6.0 answers with a salt and nonce (it hides that the user is unknown), then with
    # `e=unknown-user` in a SaslAuthenticate response whose error code is 0: it stores no SCRAM
    # credentials. aiokafka 0.14 then fails reading the missing verifier (KeyError 'v').
    assert b"e=unknown-user" in wire.received
    assert isinstance(exc, KeyError | KafkaError), repr(exc)

