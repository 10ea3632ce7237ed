"""Validation service wiring."""

from faststream import FastStream

from services.validation.handlers import register
from shared.kafka import make_broker
from shared.settings import Settings
from shared.store import connect
from shared.timeline import Timeline


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "validation")
    redis = connect(settings)
    register(broker, settings, Timeline(redis))
    return FastStream(broker, on_shutdown=[redis.aclose])
