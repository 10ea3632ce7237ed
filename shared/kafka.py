"""Kafka plumbing, written once: the broker, how a subscriber consumes, topics, fetch pacing.

How messages are handled and committed (at least once, concurrently, in order per report) is
`shared.delivery`.
"""

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from shared.delivery import delivery_middleware, handle_concurrently
from shared.seals import Seals
from shared.settings import Settings
from shared.telemetry import tracer_provider
from shared.topology import topic_config


class TiplineBroker(KafkaBroker):
    """A KafkaBroker whose subscribers handle messages concurrently (see shared.delivery)."""

    def __init__(self, *args: Any, handler_concurrency: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handler_concurrency = handler_concurrency

    async def start(self) -> None:
        for subscriber in self.subscribers:
            handle_concurrently(subscriber, self.handler_concurrency)
        await super().start()


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
    return {"bootstrap_servers": settings.kafka_bootstrap_servers,
            **parse_security(kafka_security(settings))}


def make_broker(settings: Settings, service: str, *, sealed: bool = True) -> KafkaBroker:
    """The broker of one service. `sealed`: seal what it publishes on internal topics and refuse
    unsealed records it consumes (shared/seals.py); only a tool outside the pipeline turns it
    off."""
    seals = Seals(settings.tipline_keys_dir).require(service) if sealed else None
    broker = TiplineBroker(
        settings.kafka_bootstrap_servers,
        security=kafka_security(settings),
        client_id=f"tipline-{service}",
        acks="all",
        linger_ms=settings.kafka_linger_ms,
        max_request_size=settings.kafka_max_message_bytes,
        graceful_timeout=settings.tipline_shutdown_grace_s,
        middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider(settings, service))],
        logger=logging.getLogger(f"tipline.{service}"),
        log_level=logging.DEBUG,  # one line a message is too much at INFO
        handler_concurrency=settings.tipline_handler_concurrency,
    )
    broker.add_middleware(delivery_middleware(broker, settings, service, seals))
    return broker


def consumer_options(settings: Settings, group: str) -> dict[str, Any]:
    """How every tipline subscriber consumes: its own group, manual commits, short fetch waits."""
    return {
        "group_id": group,
        "ack_policy": AckPolicy.MANUAL,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "max_partition_fetch_bytes": settings.kafka_max_message_bytes,
    }


async def ensure_topics(settings: Settings, names: list[str]) -> list[str]:
    """Create topics up front (so consumers join at once and partitions are what we want).

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
                        n, settings.kafka_partitions, replication,
                        topic_configs=topic_config(n, replication)
                        if n.startswith("tipline.") else None,
                    )
                    for n in missing
                ]
            )
        return missing
    finally:
        await admin.close()


IDLE_AFTER_S = 1.0  # a consumer with nothing new for this long polls at the idle pace


async def adapt_fetch_waits(broker: Any, settings: Settings, tick_s: float = 0.05) -> None:
    """Poll busy topics fast and quiet ones slowly, for as long as it runs.

    The embedded broker holds every fetch for the full `fetch_max_wait_ms` (it does not answer
    early when data arrives), so a short wait is what keeps a hop at a few milliseconds, and
    every consumer of every quiet topic then asks again ~150 times a second. Profiles of the
    pipeline under load put most of the services' and the broker's CPU there. So: a consumer
    that has seen nothing new for a second fetches with `kafka_idle_fetch_wait_ms`; as soon as
    its high-water mark moves it is back at `kafka_fetch_max_wait_ms`. Only the pace of fetches
    changes: what is delivered, and when offsets are committed, does not.
    """
    busy, idle = settings.kafka_fetch_max_wait_ms, settings.kafka_idle_fetch_wait_ms
    if idle <= busy:
        return
    last: dict[int, tuple[tuple[int, ...], float]] = {}
    while True:
        await asyncio.sleep(tick_s)
        now = time.monotonic()
        for sub in getattr(broker, "subscribers", []):
            for consumer in _consumers(sub):
                fetcher = getattr(consumer, "_fetcher", None)
                if fetcher is None:
                    continue
                marks = tuple(consumer.highwater(tp) or -1 for tp in sorted(
                    consumer.assignment(), key=lambda tp: (tp.topic, tp.partition)))
                seen, since = last.get(id(consumer), ((), now))
                if marks != seen:
                    since = now
                fetcher._fetch_max_wait_ms = idle if now - since > IDLE_AFTER_S else busy
                last[id(consumer)] = (marks, since)


def _consumers(sub: Any) -> list[Any]:
    """The aiokafka consumers behind a FastStream subscriber (one, or a subgroup)."""
    found = [getattr(sub, "consumer", None), *getattr(sub, "consumer_subgroup", [])]
    return [c for c in found if c is not None]
