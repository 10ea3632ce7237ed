"""Intake wiring: one broker (publish only), one Redis, the HTTP routes."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.intake.api import Intake, router
from services.intake.ispws import install as install_ispws
from shared import ops
from shared.kafka import make_broker
from shared.ledger import Ledger
from shared.settings import Settings
from shared.store import connect
from shared.telemetry import instrument_http, tracer_provider
from shared.timeline import Timeline


def create_app(settings: Settings) -> FastAPI:
    broker = make_broker(settings, "intake")
    redis = connect(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        yield
        await broker.stop()
        await redis.aclose()

    app = FastAPI(title="tipline intake", version="0.1.0", lifespan=lifespan)
    app.state.intake = Intake(
        broker=broker,
        redis=redis,
        timeline=Timeline(redis),
        ledger=Ledger(redis),
        tracer=tracer_provider(settings, "intake").get_tracer("tipline.intake"),
    )
    app.include_router(router)
    install_ispws(app, settings, broker, redis, app.state.intake.tracer)
    checks: dict[str, ops.Check] = {
        "broker": lambda: broker.ping(timeout=ops.CHECK_TIMEOUT_S),
        "redis": redis.ping,
    }
    app.include_router(ops.router(ops.Ops("intake", checks, [broker]), skip={"/healthz"}))
    instrument_http(app, settings, "intake")
    ops.count_requests(app, "intake")
    return app
