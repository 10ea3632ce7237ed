"""Referral service wiring."""

from faststream import FastStream

from services.referral.handlers import register
from shared.kafka import make_broker
from shared.ledger import Ledger
from shared.settings import Settings
from shared.store import connect
from shared.timeline import Timeline


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "referral")
    redis = connect(settings)
    register(broker, settings, Ledger(redis), Timeline(redis))
    return FastStream(broker, on_shutdown=[redis.aclose])
