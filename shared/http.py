"""HTTP plumbing every tipline API uses: a limit on the size of every request body, and 503 (not
500) while a dependency is away.

FastAPI reads a JSON body whole before it validates it, so without a limit one request can take a
process's memory. `BodyLimit` refuses a body larger than its route's limit with 413: at once when
Content-Length says so, else as soon as the streamed bytes pass it (chunked uploads too).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.settings import Settings
from shared.store import REDIS_UNAVAILABLE

# A dependency away (Redis, the broker): the call was not accepted and can be retried.
UNAVAILABLE = (*REDIS_UNAVAILABLE, KafkaError, TimeoutError, ConnectionError)


RETRY_SOON = {"Retry-After": "2"}  # a transient fault's 503: ask again, soon


async def answer_unavailable(request: Any, exc: Exception) -> Response:
    """An exception handler for UNAVAILABLE: 503 with Retry-After."""
    return JSONResponse({"detail": f"temporarily unavailable ({type(exc).__name__}), retry"},
                        503, headers=RETRY_SOON)


def proxies(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for every HTTP API: X-Forwarded-For and -Proto believed only from the
    proxies TIPLINE_FORWARDED_ALLOW_IPS names (uvicorn's own default trusts loopback, where any
    local client may claim any address and be counted as it for failed logins)."""
    trusted = settings.tipline_forwarded_allow_ips.strip()
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than {limit} bytes")
        self.limit = limit


def json_refusal(scope: Scope, exc: BodyTooLarge) -> Response:
    return JSONResponse({"detail": str(exc)}, 413)


class BodyLimit:
    """ASGI middleware: `limit` bytes for a request body, or `larger[path]` for those paths."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None,
                 refusal: Callable[[Scope, BodyTooLarge], Response] = json_refusal) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length and (not length.isdigit() or int(length) > limit):
            await self.refusal(scope, BodyTooLarge(limit))(scope, receive, send)
            return
        seen, started = 0, False
        exceeded: BodyTooLarge | None = None

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = BodyTooLarge(limit)
                    raise exceeded
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if exceeded is not None:
                # The app answered a body it could not finish reading (FastAPI turns any error
                # there into a 400): the refusal that says why goes out instead.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self.refusal(scope, exceeded)(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if started:
                raise
            await self.refusal(scope, exc)(scope, receive, send)


def refuse_too_large(
    refusal: Callable[[Scope, BodyTooLarge], Response],
) -> Callable[[Any, BodyTooLarge], Awaitable[Response]]:
    """An exception handler for routes that read past the limit (FastAPI catches it there)."""

    async def handler(request: Any, exc: BodyTooLarge) -> Response:
        return refusal(request.scope, exc)

    return handler
