"""Validation service wiring: the handlers and the checks across reports."""

from faststream import FastStream

from services.validation.crosscheck import CrossCheck
from services.validation.handlers import register
from shared.batches import Publisher
from shared.facts import Facts
from shared.kafka import make_broker
from shared.settings import Settings
from shared.store import connect


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "validation")
    redis = connect(settings)
    timeline = Facts(Publisher(broker))
    register(broker, timeline, CrossCheck(redis, timeline))
    return FastStream(broker, on_shutdown=[redis.aclose])
