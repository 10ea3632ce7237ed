"""Supplementation service wiring: the validated-report consumer and the analyst API, in one
process and one event loop."""

import asyncio
import contextlib

import uvicorn
from fastapi import FastAPI
from faststream import FastStream

from services.supplementation.api import Analysis, router
from services.supplementation.casefile import CaseFiles
from services.supplementation.handlers import register
from services.supplementation.jurisdiction import LiveRules
from services.supplementation.release import Releaser
from shared.analysts import AnalystDirectory
from shared.batches import Publisher
from shared.facts import Facts
from shared.http import (
    UNAVAILABLE,
    BodyLimit,
    BodyTooLarge,
    answer_unavailable,
    json_refusal,
    proxies,
    refuse_too_large,
)
from shared.kafka import make_broker
from shared.logins import Limits, LoginGuard
from shared.ops import count_requests, listening
from shared.settings import Settings
from shared.store import connect


class _Server(uvicorn.Server):
    def capture_signals(self) -> contextlib.nullcontext[None]:  # type: ignore[override]
        return contextlib.nullcontext()  # FastStream owns SIGTERM/SIGINT in this process


def create_app(settings: Settings) -> FastStream:
    broker = make_broker(settings, "supplementation")
    redis = connect(settings)
    timeline, cases = Facts(Publisher(broker)), CaseFiles(redis)
    rules = LiveRules(settings.tipline_routing_file, settings.tipline_routing_reload_s)
    releaser = Releaser(Publisher(broker), cases, timeline, rules)
    register(broker, cases, releaser)

    api = FastAPI(title="tipline analyst API", version="0.1.0")
    api.state.analysis = Analysis(
        broker=broker, cases=cases, timeline=timeline,
        directory=AnalystDirectory(redis, LoginGuard(Limits.of(settings))), releaser=releaser,
    )
    api.include_router(router)
    api.add_middleware(BodyLimit, limit=settings.tipline_max_body_bytes)
    api.add_exception_handler(BodyTooLarge, refuse_too_large(json_refusal))  # type: ignore[arg-type]
    for away in UNAVAILABLE:  # Redis or the broker away: 503, retry (holds, releases are safe to)
        api.add_exception_handler(away, answer_unavailable)
    count_requests(api, "supplementation")  # the analyst API's requests, on the ops endpoint
    server = _Server(uvicorn.Config(api, host=settings.tipline_analyst_host,
                                    port=settings.tipline_analyst_port, log_level="warning",
                                    **proxies(settings)))
    tasks: list[asyncio.Task[None]] = []

    async def serve_api() -> None:
        if settings.tipline_analyst_port:
            tasks.append(asyncio.create_task(server.serve()))

    async def stop() -> None:
        server.should_exit = True
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        await redis.aclose()

    app = FastStream(broker, after_startup=[serve_api], on_shutdown=[stop])
    app.analyst_api = api  # type: ignore[attr-defined]  # for in-process tests
    if settings.tipline_analyst_port:  # shared.service
        app.readiness = {"analyst API": listening(server)}  # type: ignore[attr-defined]
    return app
