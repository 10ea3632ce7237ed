"""Validation service wiring: the handlers, and the abandonment timer while the app runs."""

import asyncio

from faststream import FastStream

from services.validation.abandonment import Abandonment
from services.validation.crosscheck import CrossCheck
from services.validation.handlers import register
from shared import topics
from shared.contracts import RetractReport
from shared.drafts import Drafts
from shared.kafka import make_broker
from shared.settings import Settings
from shared.store import connect
from shared.timeline import Timeline


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "validation")
    redis = connect(settings)
    timeline = Timeline(redis)
    drafts = Drafts(redis, after_open_s=settings.tipline_abandon_after_open_s,
                    after_change_s=settings.tipline_abandon_after_change_s)
    retractions = broker.publisher(topics.RETRACTIONS_REQUESTED, schema=RetractReport)

    async def retract(command: RetractReport) -> None:
        await retractions.publish(command, key=command.report_id.encode())

    abandonment = Abandonment(redis, drafts, timeline, retract)
    register(broker, settings, timeline, abandonment, CrossCheck(redis, timeline))
    tasks: list[asyncio.Task[None]] = []

    async def start_timer() -> None:
        tasks.append(asyncio.create_task(abandonment.run(settings.tipline_abandon_tick_s)))

    async def stop_timer() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return FastStream(broker, after_startup=[start_timer], on_shutdown=[stop_timer, redis.aclose])
