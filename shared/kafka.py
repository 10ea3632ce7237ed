"""Kafka plumbing, written once: the broker of a service, its security, topics.

How a service consumes (a fetched batch as one, at least once) is `shared.batches`.
"""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from opentelemetry.trace import Tracer
from pydantic import BaseModel

from shared import metrics
from shared.batches import (
    Commits,
    Handler,
    M,
    Publisher,
    RememberingPartitioner,
    Resting,
    Transactions,
    consume,
    consumer_options,
    sealed,
)
from shared.seals import Seals
from shared.settings import Settings
from shared.telemetry import tracer_provider
from shared.topics import WRITERS, writes
from shared.topology import partitions_of, topic_config

__all__ = ["LagProbe", "TiplineBroker", "consumer_lag", "consumer_options", "described_partitions",
           "ensure_topics", "kafka_client_options", "kafka_security", "make_broker",
           "topic_partitions"]


_SASL = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512, "PLAIN": SASLPlaintext}


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """The client's TLS and SASL settings, as FastStream takes them (None: plaintext)."""
    protocol = settings.kafka_security_protocol
    tls = protocol in ("SSL", "SASL_SSL")
    context = create_ssl_context(
        cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None,
        certfile=str(settings.kafka_ssl_cert_file) if settings.kafka_ssl_cert_file else None,
        keyfile=str(settings.kafka_ssl_key_file) if settings.kafka_ssl_key_file else None,
    ) if tls else None
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return _SASL[settings.kafka_sasl_mechanism](
            str(settings.kafka_sasl_username), password.get_secret_value() if password else "",
            ssl_context=context, use_ssl=tls,
        )
    return BaseSecurity(ssl_context=context, use_ssl=True) if tls else None


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Where and how every plain aiokafka client connects: producers, consumers, admin."""
    return {"bootstrap_servers": settings.kafka_bootstrap,
            **parse_security(kafka_security(settings))}


class TiplineBroker(KafkaBroker):
    """The broker of one tipline service: what it publishes on an internal topic is sealed as
    its own, and `consume` registers batch subscribers (shared/batches/). A `transactional`
    one (the notice senders) handles each batch in a transaction where the broker offers them
    (KAFKA_TRANSACTIONS)."""

    def __init__(self, *args: Any, service: str, settings: Settings, seals: Seals | None,
                 transactional: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service, self.settings, self.seals = service, settings, seals
        self.transactional = transactional and settings.kafka_transactions
        self._sender: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self.commits: list[Commits] = []  # each subscriber's
        self.transactions: list[Transactions] = []  # each subscriber's, when transactional
        self.resting = Resting.of(settings, service)

    def consume(self, *topic_names: str, group: str, model: type[M], patient: bool = False,
                max_records: int | None = None) -> Callable[[Handler[M]], Handler[M]]:
        self.commits.append(commits := Commits(self.service))
        transactions = None
        if self.transactional:
            transactions = Transactions({
                **producer_options(self.settings, self.service),
                "transactional_id": transactional_id(self.service, group,
                                                     self.settings.tipline_instance),
                "transaction_timeout_ms": self.settings.kafka_transaction_timeout_ms,
            }, group)
            self.transactions.append(transactions)
        return consume(self, self.settings, self.service, *topic_names, group=group,
                       model=model, seals=self.seals, patient=patient, max_records=max_records,
                       commits=commits, transactions=transactions,
                       letters=Publisher(self) if transactions else None, resting=self.resting)

    async def sender(self) -> AIOKafkaProducer:
        """The producer a batch's records go out on, started on first use. FastStream's own
        publish costs a few hundred microseconds a record in its machinery; a batch sends
        hundreds, so `shared.batches.Publisher` hands them to this plain producer instead."""
        async with self._starting:
            if self._sender is None:
                sender = AIOKafkaProducer(**producer_options(self.settings, self.service))
                await sender.start()
                self._sender = sender
        return self._sender

    def tracer(self) -> Tracer:
        return tracer_provider(self.settings, self.service).get_tracer("tipline.publish")

    async def start(self, *args: Any, **kwargs: Any) -> None:
        await super().start(*args, **kwargs)
        self.resting.start()

    async def stop(self, *args: Any, **kwargs: Any) -> None:
        await self.resting.stop()
        # The commits on their way first, and the batch in hand's awaited, before any consumer
        # stops.
        await asyncio.gather(*(commits.drain() for commits in self.commits))
        await super().stop(*args, **kwargs)  # the subscribers finish their batches first
        await asyncio.gather(*(t.stop() for t in self.transactions))
        if self._sender is not None:
            await self._sender.stop()
            self._sender = None


def make_broker(settings: Settings, service: str, *, sealed: bool = True,
                transactional: bool = False) -> TiplineBroker:
    """The broker of one service. `sealed`: seal what it publishes on internal topics and refuse
    unsealed records it consumes (shared/seals.py); only a tool outside the pipeline turns it
    off. `transactional`: each batch its subscribers handle is one transaction, where the
    broker offers them (KAFKA_TRANSACTIONS): the notice senders."""
    seals = Seals(settings.tipline_keys_dir).require(service) if sealed else None
    options = producer_options(settings, service)
    return TiplineBroker(
        settings.kafka_bootstrap,
        security=kafka_security(settings),
        client_id=options["client_id"],
        acks=options["acks"],
        linger_ms=options["linger_ms"],
        max_batch_size=options["max_batch_size"],
        max_request_size=options["max_request_size"],
        enable_idempotence=options["enable_idempotence"],
        graceful_timeout=settings.tipline_shutdown_grace_s,
        middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider(settings, service)),
                     outgoing(service, seals)],
        logger=logging.getLogger(f"tipline.{service}"),
        log_level=logging.DEBUG,  # one line a batch is too much at INFO
        service=service, settings=settings, seals=seals, transactional=transactional,
    )


def producer_options(settings: Settings, service: str) -> dict[str, Any]:
    """How every tipline producer sends: acknowledged by all in-sync replicas, in batches, and
    written once when retried where the broker offers idempotence."""
    return {**kafka_client_options(settings), "client_id": f"tipline-{service}", "acks": "all",
            # An idempotent producer needs a principal allowed to write: the console is not.
            "enable_idempotence": (settings.kafka_idempotence or settings.kafka_transactions)
            and writes(service),
            "linger_ms": settings.kafka_linger_ms,
            "max_batch_size": settings.kafka_max_batch_bytes,
            "max_request_size": settings.kafka_max_message_bytes,
            "partitioner": RememberingPartitioner()}


def transactional_id(service: str, group: str, instance: str) -> str:
    """A subscriber's transactional id: the same for the copy that replaces it (which fences it),
    another for every other copy."""
    return f"tipline-{service}-{group}-{instance}"


def outgoing(service: str, seals: Seals | None) -> type[BaseMiddleware]:
    """Every publish: sealed when its topic is internal, and counted."""

    class Outgoing(BaseMiddleware):
        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            if seals is not None and cmd.destination in WRITERS:
                # Sealed over the bytes that go out, so encode here (as FastStream would).
                body = cmd.body
                if isinstance(body, BaseModel):
                    cmd.body = body = body.model_dump_json().encode()
                # What goes out beside the seal: the trace headers (FastStream's telemetry
                # middleware, the outer one, set them already) and the correlation id.
                others = [*cmd.headers.items(),
                          *([("correlation_id", cmd.correlation_id)] if cmd.correlation_id
                            else [])]
                for name, value in sealed(service, seals, cmd.destination, cmd.key, body,
                                          others):
                    cmd.headers[name] = value.decode()
            result = await call_next(cmd)
            metrics.EVENTS_OUT.labels(service, cmd.destination).inc()
            return result

    return Outgoing


async def ensure_topics(settings: Settings, names: list[str],
                        partitions: int | None = None) -> list[str]:
    """Create topics up front (so consumers join at once and partitions are what we want):
    KAFKA_AGENCY_PARTITIONS for an agency's notice topic, KAFKA_PARTITIONS for the others, or
    `partitions` for all of these.

    tipline's topics get their retention from `shared.topology` (preservation); returns the
    names created by this call.
    """
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    replication = settings.kafka_replication_factor
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        n, partitions or partitions_of(n, settings.kafka_partitions,
                                                       settings.kafka_agency_partitions),
                        replication,
                        topic_configs=topic_config(n, replication)
                        if n.startswith("tipline.") else None,
                    )
                    for n in missing
                ]
            )
            await _until_described(admin, missing)
        return missing
    finally:
        await admin.close()


async def _until_described(admin: AIOKafkaAdminClient, names: list[str],
                           timeout_s: float = 15.0) -> None:
    """Wait until the broker answering describes every one of these new topics with its
    partitions. Apache Kafka answers CreateTopics once its controller has them; the other
    brokers learn of them a moment later, and a reader that asks one of them first finds none."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and t["partitions"] for t in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics not described {timeout_s:.0f} s after creation: {names}")
        await asyncio.sleep(0.05)


async def topic_partitions(settings: Settings, names: Iterable[str]) -> list[TopicPartition]:
    """Every partition of those of these topics that exist (and the caller may describe), from
    the cluster's metadata. A consumer's `partitions_for_topic` knows only the topics it tracks
    already: on Apache Kafka none before it is assigned one (the embedded broker names every
    topic in an answer to a metadata request for none)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        return await described_partitions(admin, names)
    finally:
        await admin.close()


async def described_partitions(admin: AIOKafkaAdminClient,
                               names: Iterable[str]) -> list[TopicPartition]:
    """`topic_partitions` through an admin client the caller keeps open."""
    described = await admin.describe_topics(list(names))
    return sorted(TopicPartition(t["topic"], p["partition"])
                  for t in described if t["error_code"] == 0 for p in t["partitions"])


# Consumer lag is the partition's high-water mark minus the group's committed offset. The
# high-water mark comes from a fetch (`consumer.highwater`), because the embedded broker's
# `end_offsets` answers the start of the last batch instead (see the embedded-broker notes).
async def consumer_lag(settings: Settings, timeout_s: float = 3.0,
                       skip: frozenset[str] = frozenset()) -> dict[str, dict[str, int]]:
    """{group: {topic: lag}} for every consumer group with committed offsets, on every topic
    but `skip` (topics the caller may not read)."""
    async with LagProbe(settings) as probe:
        return await probe.lag(timeout_s, skip)


class LagProbe:
    """An admin client and a consumer that measure consumer lag, kept open between
    measurements: on Apache Kafka each new connection costs both ends a TLS handshake and a
    SCRAM login, which a console asking every few seconds would pay again each time."""

    def __init__(self, settings: Settings) -> None:
        self.admin = AIOKafkaAdminClient(**kafka_client_options(settings),
                                         request_timeout_ms=5000)
        self.probe = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False)

    async def __aenter__(self) -> "LagProbe":
        await self.admin.start()
        try:
            await self.probe.start()
        except BaseException:
            await self.admin.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await self.probe.stop()
        finally:
            await self.admin.close()

    async def lag(self, timeout_s: float = 3.0,
                  skip: frozenset[str] = frozenset()) -> dict[str, dict[str, int]]:
        """{group: {topic: lag}}, as `consumer_lag` says."""
        groups = sorted(g[0] for g in await self.admin.list_consumer_groups())
        topics = [t for t in await self.admin.list_topics()
                  if not t.startswith("__") and t not in skip]
        tps = await described_partitions(self.admin, topics)
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await self.admin.list_consumer_group_offsets(group, partitions=tps)
            committed[group] = {tp: m.offset for tp, m in offsets.items() if m.offset >= 0}
        used = sorted({tp for c in committed.values() for tp in c})
        highwater = await _highwaters(self.probe, used, committed, timeout_s)
        lag: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for group, offsets in committed.items():
            for tp, offset in offsets.items():
                if tp in highwater:
                    lag[group][tp.topic] += max(highwater[tp] - offset, 0)
        return {g: dict(t) for g, t in lag.items()}


async def _highwaters(
    probe: AIOKafkaConsumer, tps: list[TopicPartition],
    committed: dict[str, dict[TopicPartition, int]], timeout_s: float,
) -> dict[TopicPartition, int]:
    """A fetch at the lowest committed offset of each partition tells its high-water mark.
    The partitions are paused afterwards, so a kept probe fetches nothing between asks."""
    if not tps:
        return {}
    probe.assign(tps)
    for tp in tps:
        probe.seek(tp, min(c[tp] for c in committed.values() if tp in c))
    out: dict[TopicPartition, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(out) < len(tps) and loop.time() < deadline:
        await probe.getmany(timeout_ms=100, max_records=1)
        for tp in tps:
            mark = probe.highwater(tp)
            if mark is not None:
                out[tp] = mark
    probe.pause(*tps)
    return out
