"""Console service wiring: its store, the follower that fills it from the topics, the lag poller
and the HTTP app, in one process and one event loop. It writes nothing to Kafka."""

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import uvicorn
from faststream import FastStream

from services.console import alerts
from services.console.follow import Follower, Reader, follow_lag
from services.console.sessions import MIN_SECRET_LENGTH, Sessions
from services.console.store import Store
from services.console.web import Console, Live, Readers, create_api
from shared.agencies import AgencyRegistry
from shared.analysts import AnalystDirectory
from shared.http import proxies
from shared.kafka import make_broker
from shared.logins import Limits, LoginGuard
from shared.ops import count_requests, listening
from shared.settings import Settings
from shared.shutdown import cancel
from shared.signing import PUBLIC_FILE, Verifier
from shared.store import connect


class _Server(uvicorn.Server):
    def capture_signals(self) -> contextlib.nullcontext[None]:  # type: ignore[override]
        return contextlib.nullcontext()  # FastStream owns SIGTERM/SIGINT in this process


def session_secret(settings: Settings) -> bytes:
    secret = settings.tipline_console_session_secret
    value = secret.get_secret_value() if secret else ""
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"TIPLINE_CONSOLE_SESSION_SECRET: {MIN_SECRET_LENGTH} or more "
                         "characters are needed to sign console sessions (`tipline deploy "
                         "secrets` makes one; `tipline up` makes one in its workdir)")
    return value.encode()


def create_app(settings: Settings) -> FastStream:
    secret = session_secret(settings)
    # The broker publishes nothing: it is FastStream's, it checks seals, and its ping is the
    # readiness check.
    broker = make_broker(settings, "console")
    redis = connect(settings)  # the analyst directory (read only) and the console's sign-outs
    store = Store(settings.tipline_console_data_dir)
    live = Live(version=store.version)
    registry = AgencyRegistry(settings.tipline_routing_file)
    reader = Reader(broker.seals, Verifier(settings.tipline_keys_dir / PUBLIC_FILE))
    follower = Follower(settings, store, live, reader, registry)
    readers = Readers(store.path, settings.tipline_ack_timeout_s, settings.tipline_max_resends)
    directory = AnalystDirectory(redis, LoginGuard(Limits.of(settings)))
    ttl_s = settings.tipline_console_session_ttl_s
    console = Console(readers, registry, directory, Sessions(
        redis, directory, secret, ttl_s, secure=settings.tipline_console_secure_cookie), live,
        ttl_s, settings.tipline_console_trace_url)
    alerts.PER_AGENCY_COLLECTOR.source = lambda: (
        (readers.queries(), set(console.agencies())) if live.caught_up else None)
    api = create_api(console)
    count_requests(api, "console")
    server = _Server(uvicorn.Config(api, host=settings.tipline_console_host,
                                    port=settings.tipline_console_port, log_level="warning",
                                    **proxies(settings)))
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        jobs: list[Coroutine[Any, Any, None]] = [follower.run(), follow_lag(settings, live)]
        if settings.tipline_console_port:
            jobs.append(server.serve())
        tasks.extend(asyncio.create_task(job) for job in jobs)

    async def stop() -> None:
        server.should_exit = True  # then cut off whatever still holds it after 5 s
        await cancel(*tasks[:2])
        for task in tasks[2:]:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)
        await redis.aclose()
        store.close()

    async def caught_up() -> bool:
        return live.caught_up

    app = FastStream(broker, after_startup=[start], on_shutdown=[stop])
    app.console_api = api  # type: ignore[attr-defined]  # for in-process tests
    app.readiness = {"read model": caught_up,  # type: ignore[attr-defined]  # shared.service
                     **({"console": listening(server)} if settings.tipline_console_port else {})}
    return app
