"""Retraction service wiring: the retraction and ack subscribers, and the re-send loop."""

import asyncio

from faststream import FastStream

from services.notification.awaiting import AwaitingAcknowledgement
from services.notification.flow import NotificationFlow
from services.notification.ledger import Ledger
from services.retraction.handlers import register
from shared.batches import Publisher
from shared.facts import Facts
from shared.kafka import make_broker
from shared.settings import Settings
from shared.shutdown import cancel
from shared.signing import Signer
from shared.store import connect


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "retraction", transactional=True)
    redis = connect(settings)
    publish = Publisher(broker)
    flow = NotificationFlow(publish, Ledger(redis), Facts(publish),
                            Signer(settings.tipline_keys_dir),
                            AwaitingAcknowledgement(redis, settings.tipline_ack_timeout_s))
    register(broker, settings, flow)
    tasks: list[asyncio.Task[None]] = []

    async def start_following() -> None:
        tasks.append(asyncio.create_task(flow.follow_acks(
            settings.tipline_max_resends, settings.tipline_resend_tick_s)))

    async def stop_following() -> None:
        await cancel(*tasks)
        await redis.aclose()

    return FastStream(broker, after_startup=[start_following], on_shutdown=[stop_following])
