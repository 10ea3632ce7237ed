"""Running a service process: settings, logging, the ops endpoint, then the app until SIGTERM.

FastStream stops consuming on SIGTERM/SIGINT, lets the batches in hand finish (the broker first
waits for the commits on their way, then for each batch's own: shared.batches.Commits) and
closes the broker; shared.shutdown ends a process
that has not stopped by the end of its grace period. An HTTP service (intake) is served by
uvicorn, which lets requests in hand finish within the same grace period: longer than a request
waits for the broker, so no accepted call is cut off mid-way.
"""

import asyncio
import gc
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from faststream import FastStream

from shared import metrics, ops
from shared.http import proxies
from shared.settings import Settings, get_settings
from shared.shutdown import Server, exit_within
from shared.store import connect
from shared.telemetry import configure_logging


def service_name(create_app: Callable[..., object]) -> str:
    """`services.<name>.main.create_app` -> `<name>`."""
    parts = create_app.__module__.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "services" else parts[0]


def run(create_app: Callable[[Settings], FastStream]) -> None:
    settings = get_settings()
    service = service_name(create_app)
    configure_logging(settings, service)
    metrics.time_garbage_collection(service)
    app = create_app(settings)

    @app.after_startup
    async def settle() -> None:  # async: FastStream runs a plain function in a worker thread
        freeze_startup_objects()

    exit_within(app, settings.tipline_shutdown_grace_s + 5)
    asyncio.run(serve(app, settings, service))


async def serve(app: FastStream, settings: Settings, service: str) -> None:
    # Readiness asks Redis over a connection of its own, so a wedged app client shows too.
    redis = connect(settings)
    broker = app.broker
    checks: dict[str, ops.Check] = {"redis": redis.ping}
    if broker is not None:
        checks["broker"] = lambda: broker.ping(timeout=ops.CHECK_TIMEOUT_S)
    checks.update(getattr(app, "readiness", {}))  # a service's own (the console's read model)
    # Ready once every subscriber has started: FastStream starts them one group join at a time.
    started = asyncio.Event()

    @app.after_startup
    async def mark_started() -> None:
        started.set()

    async def has_started() -> bool:
        return started.is_set()

    checks["started"] = has_started
    try:
        async with ops.serving(settings, ops.Ops(service, checks, [broker] if broker else [])):
            await app.run()
    finally:
        await redis.aclose()


def freeze_startup_objects() -> None:
    """Garbage collection tuned for batches, once start-up is done (tipline_gc_pause_seconds
    measures it).

    - What start-up made (modules, models, schemas) is left out of every later collection: a
      full one walked them all while the batch in hand waited.
    - A young collection comes after 10,000 new container objects instead of 700: a batch in
      hand holds thousands, freed together when it is done, so at 700 the collector ran many
      times a second scanning live records for nothing. Figures: docs/load-testing.md."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def run_http(create_app: Callable[[Settings], FastAPI]) -> None:
    settings = get_settings()
    service = service_name(create_app)
    configure_logging(settings, service)
    metrics.time_garbage_collection(service)
    app = create_app(settings)
    freeze_startup_objects()  # a request in hand waits out a collection as a batch does
    asyncio.run(serve_http(app, settings))


async def serve_http(app: FastAPI, settings: Settings) -> None:
    server = Server(uvicorn.Config(
        app, host=settings.tipline_http_host, port=settings.tipline_http_port,
        log_level="warning", timeout_graceful_shutdown=int(settings.tipline_shutdown_grace_s),
        **proxies(settings),
    ), exit_within=settings.tipline_shutdown_grace_s + 5)
    app.state.ops.checks["listening"] = ops.listening(server)
    async with ops.serving(settings, app.state.ops):
        await server.serve()
