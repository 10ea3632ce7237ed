"""Supplementation service wiring."""

from faststream import FastStream

from services.supplementation.handlers import register
from services.supplementation.jurisdiction import load_rules
from shared.kafka import make_broker
from shared.settings import Settings
from shared.store import connect
from shared.timeline import Timeline


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "supplementation")
    redis = connect(settings)
    register(broker, settings, Timeline(redis), load_rules(settings.tipline_routing_file))
    return FastStream(broker, on_shutdown=[redis.aclose])
