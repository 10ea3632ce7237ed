"""The trust model on a running Apache Kafka (the `apache` fixture: SASL_SSL with SCRAM-SHA-512,
the StandardAuthorizer, the ACLs `tipline up --kafka apache` applies from tipline/access.py).

Each test does what an attacker would, as a principal of the deployment or as nobody, and checks
the broker's refusal; beside each refusal a control does the allowed thing the same way, so a
refusal for another reason (the broker away, a wrong address) fails the test instead of passing
it. The expectations are written out here, not derived from the plan: a plan that grants too much
fails them.
"""

import asyncio
import ssl
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from shared.agencies import load_agencies
from shared.kafka import kafka_client_options
from shared.settings import Settings
from shared.topology import topic_names
from tests.apache_support import ApacheKafka
from tipline.pki import LOOPBACK, make_pki

SERVICES = ("intake", "validation", "supplementation", "referral", "retraction", "console")
# What each pipeline service writes (besides notices), and a topic of another service's.
INTAKE_WRITES = {"tipline.reports.drafts", "tipline.reports.submitted",
                 "tipline.retractions.requested", "tipline.deadletter.intake",
                 "tipline.reports.additions"}  # what a public reporter adds with the receipt
ANOTHERS = {"intake": "tipline.reports.validated", "validation": "tipline.reports.supplemented",
            "supplementation": "tipline.reports.referred",
            "referral": "tipline.reports.retracted", "retraction": "tipline.reports.validated"}
OWN = {"intake": "tipline.reports.submitted", "validation": "tipline.reports.validated",
       "supplementation": "tipline.reports.supplemented", "referral": "tipline.reports.referred",
       "retraction": "tipline.reports.retracted"}


async def write(settings: Settings, topic: str, value: bytes = b"synthetic") -> int:
    """One record, acknowledged by all replicas; returns its offset."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all",
                                request_timeout_ms=10_000)
    await producer.start()
    try:
        return (await producer.send_and_wait(topic, value, key=b"trust-test")).offset
    finally:
        await producer.stop()


async def refusal(attempt: Awaitable[Any], what: str = "") -> BaseException:
    try:
        await asyncio.wait_for(attempt, 60)
    except Exception as exc:
        return exc
    raise AssertionError(f"allowed: {what}")


def admin_error(admin: AdminClient, futures: dict[Any, Any]) -> int:
    """The error code of a one-item admin request (0: done)."""
    (future,) = futures.values()
    try:
        future.result(30)
    except KafkaException as exc:
        return int(exc.args[0].code())
    return 0


def first_record(config: dict[str, Any], topic: str, group: str,
                 value: bytes | None = None) -> Any:
    """What a consumer in `group` gets first from `topic`: a record (the first of this `value`,
    when given: other tests' records may come before it), or the broker's error."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and (value is None or message.error() is not None
                                        or message.value() == value):
                return message
        raise AssertionError(f"nothing at all from {topic} in 30 s")
    finally:
        consumer.close()


async def test_no_credentials_or_wrong_ones_are_refused(apache: ApacheKafka) -> None:
    intake = apache.settings_for("intake")
    assert await write(intake, "tipline.reports.drafts") >= 0  # the control: its own login
    for nobody in (
        intake.model_copy(update={"kafka_security_protocol": "SSL"}),  # TLS, no login at all
        intake.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}),
        intake.model_copy(update={"kafka_sasl_password": SecretStr("not-its-password")}),
        intake.model_copy(update={"kafka_sasl_username": "mallory"}),
    ):
        exc = await refusal(write(nobody, "tipline.reports.drafts"))
        assert isinstance(exc, KafkaConnectionError), repr(exc)


async def test_a_client_trusting_another_ca_is_refused(apache: ApacheKafka,
                                                       tmp_path: Path) -> None:
    port = apache.cluster.nodes[0].client
    # The broker speaks TLS with a certificate for 127.0.0.1 signed by the stack's CA ...
    ours = ssl.create_default_context(cafile=str(apache.cluster.ca))
    _, writer = await asyncio.open_connection(LOOPBACK, port, ssl=ours,
                                              server_hostname=LOOPBACK)
    writer.close()
    # ... which a client trusting another CA (or only the system's) refuses to talk to.
    other = make_pki(tmp_path).other_ca
    for trusting in (ssl.create_default_context(cafile=str(other)),
                     ssl.create_default_context()):
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(LOOPBACK, port, ssl=trusting,
                                          server_hostname=LOOPBACK)
    exc = await refusal(write(apache.settings_for("intake", kafka_ssl_ca_file=other),
                              "tipline.reports.drafts"))
    assert isinstance(exc, KafkaConnectionError), repr(exc)


@pytest.mark.parametrize("service", sorted(ANOTHERS))
async def test_a_service_writing_another_services_topic_is_refused(
    apache: ApacheKafka, service: str,
) -> None:
    settings = apache.settings_for(service)
    assert await write(settings, OWN[service]) >= 0
    exc = await refusal(write(settings, ANOTHERS[service], b"forged"))
    assert isinstance(exc, TopicAuthorizationFailedError), repr(exc)
    assert exc.errno == 29  # TOPIC_AUTHORIZATION_FAILED


def test_an_agency_reads_its_own_topic_and_no_other(apache: ApacheKafka) -> None:
    mine = f"synthetic-{uuid.uuid4()}".encode()  # (other tests may write these topics too)
    for agency in ("icac-ca", "icac-ny"):
        asyncio.run(write(apache.admin(), f"tipline.agency.{agency}", mine))
    own = first_record(apache.config_for("agency-icac-ca"), "tipline.agency.icac-ca",
                       "agency-icac-ca", mine)
    assert own.error() is None and own.value() == mine
    other = first_record(apache.config_for("agency-icac-ca"), "tipline.agency.icac-ny",
                         "agency-icac-ca")
    assert other.error() is not None
    assert other.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, other.error()
    # Nor may it join the other agency's consumer group (and so commit in its name).
    borrowed = first_record(apache.config_for("agency-icac-ca"), "tipline.agency.icac-ca",
                            "agency-icac-ny")
    assert borrowed.error() is not None
    assert borrowed.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED, borrowed.error()


def test_only_the_admin_deletes_or_creates_a_topic(apache: ApacheKafka) -> None:
    victim = "tipline.agency.icac-ca"
    asyncio.run(write(apache.admin(), victim, b"a notice to keep"))
    for principal in (*SERVICES, "agency-icac-ca", "agency-icac-ny"):
        admin = AdminClient(apache.config_for(principal))
        code = admin_error(admin, admin.delete_topics([victim], operation_timeout=20))
        assert code == KafkaError.TOPIC_AUTHORIZATION_FAILED, (principal, code)
        code = admin_error(admin, admin.create_topics([NewTopic("tipline.planted", 1, 1)]))
        assert code == KafkaError.TOPIC_AUTHORIZATION_FAILED, (principal, code)
    admin = AdminClient(apache.config_for("admin"))
    assert victim in admin.list_topics(timeout=10).topics  # still there, its notices too
    # The control: the admin may delete; asked for a topic that does not exist, it is told so,
    # where everyone else was refused first.
    code = admin_error(admin, admin.delete_topics(["tipline.no-such-topic"],
                                                  operation_timeout=20))
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART, code


async def test_intake_writes_its_own_topics_and_nothing_else(apache: ApacheKafka) -> None:
    """Intake faces the internet: were it taken over, it could write only what it writes."""
    intake = apache.settings_for("intake")
    agencies = load_agencies(apache.admin().tipline_routing_file)
    for topic in sorted(INTAKE_WRITES):
        assert await write(intake, topic) >= 0, topic
    for topic in sorted(set(topic_names(agencies)) - INTAKE_WRITES):
        exc = await refusal(write(intake, topic, b"forged"), f"intake writing {topic}")
        assert isinstance(exc, TopicAuthorizationFailedError), (topic, repr(exc))


async def test_the_console_reads_and_writes_nothing(apache: ApacheKafka) -> None:
    console = apache.settings_for("console")
    synthetic = f"synthetic-{uuid.uuid4().hex}".encode()
    for topic in ("tipline.reports.referred", "tipline.agency.acks"):
        await write(apache.admin(), topic, synthetic)
    shown = await asyncio.to_thread(first_record, apache.config_for("console"),
                                    "tipline.reports.referred", "console", synthetic)
    assert shown.error() is None and shown.value() == synthetic
    # Not even every topic: the agencies' raw responses are retraction's to check.
    acks = await asyncio.to_thread(first_record, apache.config_for("console"),
                                   "tipline.agency.acks", "console")
    assert acks.error() is not None
    assert acks.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, acks.error()
    agencies = load_agencies(apache.admin().tipline_routing_file)
    for topic in topic_names(agencies):
        exc = await refusal(write(console, topic, b"forged"), f"console writing {topic}")
        assert isinstance(exc, TopicAuthorizationFailedError), (topic, repr(exc))
