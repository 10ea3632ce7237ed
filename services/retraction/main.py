"""Retraction service wiring: the retraction and ack subscribers, and the re-send loop."""

import asyncio

from faststream import FastStream

from services.notification.ledger import Ledger
from services.notification.notices import Dispatch
from services.notification.outbox import Outbox
from services.retraction.acks import follow_acks
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
    timeline = Facts(Publisher(broker))
    outbox = Outbox(redis, settings.tipline_ack_timeout_s)
    dispatch = Dispatch(Signer(settings.tipline_keys_dir), outbox)
    register(broker, settings, Ledger(redis), timeline, dispatch)
    tasks: list[asyncio.Task[None]] = []

    async def start_following() -> None:
        tasks.append(asyncio.create_task(follow_acks(broker, outbox, timeline, settings)))

    async def stop_following() -> None:
        await cancel(*tasks)
        await redis.aclose()

    return FastStream(broker, after_startup=[start_following], on_shutdown=[stop_following])
