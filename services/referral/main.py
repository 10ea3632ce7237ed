"""Referral service wiring."""

from faststream import FastStream

from services.notification.ledger import Ledger
from services.notification.notices import Dispatch
from services.notification.outbox import Outbox
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
    outbox = Outbox(redis, settings.tipline_ack_timeout_s)
    dispatch = Dispatch(Signer(settings.tipline_keys_dir), outbox)
    register(broker, Ledger(redis), Facts(Publisher(broker)), dispatch)
    return FastStream(broker, on_shutdown=[redis.aclose])
