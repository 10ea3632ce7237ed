"""The ops endpoint of every service: liveness, readiness and Prometheus metrics.

- `/healthz`: the process's event loop answers. A failing liveness probe restarts the container.
- `/readyz`: the service has started (every subscriber), and the broker and Redis answer. 503
  with the failing check while not.
- `/metrics`: Prometheus text format; consumer lag is measured at each scrape.

FastStream services serve these on `TIPLINE_OPS_PORT` (0: off) from `shared.service.run`;
intake serves them on its own HTTP app (`router`).
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import CONSUMER_LAG, HTTP_REQUESTS, HTTP_SECONDS
from shared.settings import Settings

log = logging.getLogger("tipline.ops")

Check = Callable[[], Awaitable[object]]
CHECK_TIMEOUT_S = 2.0


def listening(server: uvicorn.Server) -> Check:
    """A readiness check: the uvicorn server has bound its port. uvicorn binds after the app's
    start-up, so a service whose port is taken would otherwise look ready and serve nothing
    (it exits a moment later)."""
    async def bound() -> bool:
        return bool(server.started)

    return bound


@dataclass
class Ops:
    service: str
    checks: dict[str, Check] = field(default_factory=dict)
    brokers: list[Any] = field(default_factory=list)

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Each check's state; ready only when every check passed."""
        states: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                ok = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
                states[name] = "ok" if ok is not False else "failing"
            except Exception as exc:  # a check that raises is a failing check, not a 500
                states[name] = f"failing: {type(exc).__name__}"
        return all(s == "ok" for s in states.values()), states

    async def metrics(self) -> bytes:
        for broker in self.brokers:
            await update_lag(self.service, broker)
        return bytes(generate_latest())


async def update_lag(service: str, broker: Any) -> None:
    """Lag per assigned partition: the consumer's high-water mark minus the committed offset.

    (`end_offsets` is wrong on the embedded broker; `highwater` is right on both.)
    """
    reported: set[tuple[str, str, str, str]] = set()
    for sub in getattr(broker, "subscribers", []):
        consumer = getattr(sub, "consumer", None)
        group = getattr(sub, "group_id", None)
        if consumer is None or group is None:
            continue
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched yet: lag unknown, not zero
            try:
                committed = await asyncio.wait_for(consumer.committed(tp), CHECK_TIMEOUT_S)
            except Exception:
                continue
            labels = (service, group, tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(max(highwater - (committed or 0), 0))
            reported.add(labels)
    # A partition moved to another instance is that instance's to report: summing the gauge
    # over instances must count each partition once.
    for labels in _lag_reported.get((service, id(broker)), set()) - reported:
        CONSUMER_LAG.remove(*labels)
    _lag_reported[(service, id(broker))] = reported


_lag_reported: dict[tuple[str, int], set[tuple[str, str, str, str]]] = {}


async def _answer(ops: Ops, path: str) -> tuple[int, str, bytes]:
    if path == "/healthz":
        return 200, "application/json", b'{"status":"ok"}'
    if path == "/readyz":
        ready, states = await ops.readiness()
        body = json.dumps({"ready": ready, "checks": states}).encode()
        return (200 if ready else 503), "application/json", body
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, await ops.metrics()
    return 404, "application/json", b'{"detail":"not found"}'


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


async def _handle(ops: Ops, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = await asyncio.wait_for(reader.readline(), 5)
        while await asyncio.wait_for(reader.readline(), 5) not in (b"\r\n", b"\n", b""):
            pass  # headers: nothing here needs them
        parts = request.decode("latin-1").split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            status, ctype, body = 400, "application/json", b'{"detail":"GET only"}'
        else:
            status, ctype, body = await _answer(ops, parts[1].split("?", 1)[0])
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + (b"" if parts[:1] == ["HEAD"] else body))
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def serving(settings: Settings, ops: Ops) -> AsyncIterator[int | None]:
    """Serve the ops endpoint while the block runs; yields its port (None when off)."""
    if not settings.tipline_ops_port:
        yield None
        return
    server = await asyncio.start_server(
        lambda r, w: _handle(ops, r, w), settings.tipline_ops_host, settings.tipline_ops_port
    )
    port = int(server.sockets[0].getsockname()[1])
    log.info("ops endpoint on %s:%s", settings.tipline_ops_host, port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def router(ops: Ops, *, skip: Iterable[str] = ()) -> APIRouter:
    """The same endpoints for a FastAPI app (intake), minus paths it already serves."""
    api = APIRouter(include_in_schema=False)

    def endpoint(path: str) -> Callable[[], Awaitable[Response]]:
        async def answer() -> Response:
            status, ctype, body = await _answer(ops, path)
            return Response(body, status_code=status, media_type=ctype)

        return answer

    for path in ("/healthz", "/readyz", "/metrics"):
        if path not in skip:
            api.add_api_route(path, endpoint(path), methods=["GET"])
    return api


def count_requests(app: FastAPI, service: str) -> None:
    """Requests and their latency per route template (never the path: it holds report ids)."""
    app.add_middleware(CountRequests, service=service)


class CountRequests:
    """ASGI middleware for `count_requests`. Plain ASGI, not `@app.middleware("http")`, which
    runs each request in a task of its own with memory streams between, at a cost to every
    request (docs/load-testing.md)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            if route not in ("/healthz", "/readyz", "/metrics"):
                HTTP_REQUESTS.labels(self.service, scope["method"], route, str(status)).inc()
                HTTP_SECONDS.labels(self.service, scope["method"], route).observe(
                    time.perf_counter() - started)
