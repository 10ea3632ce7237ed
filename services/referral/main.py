"""Referral service wiring."""

from faststream import FastStream

from services.notification.awaiting import AwaitingAcknowledgement
from services.notification.flow import NotificationFlow
from services.notification.ledger import Ledger
from services.referral.handlers import register
from shared.batches import Publisher
from shared.facts import Facts
from shared.kafka import make_broker
from shared.settings import Settings
from shared.signing import Signer
from shared.store import connect


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "referral", transactional=True)
    redis = connect(settings)
    publish = Publisher(broker)
    register(broker, NotificationFlow(
        publish, Ledger(redis), Facts(publish), Signer(settings.tipline_keys_dir),
        AwaitingAcknowledgement(redis, settings.tipline_ack_timeout_s)))
    return FastStream(broker, on_shutdown=[redis.aclose])
