"""Idempotency-Key: a retried POST gets the first answer and creates nothing new.

The first call with a key claims it (SET NX) with a lease, and stores its answer when done; a
retry meanwhile waits for that answer. Keys are per ESP, so two ESPs never see each other's
answers. A call that failed (an exception or a 5xx) gives its lease up, and one that died
mid-call lets it lapse: the next retry takes the claim over and runs again. So does one answered
"try again later" (Retry-After): that answer is for the one try, never kept for the key. A
caller may reserve a value with the claim (`/v1` submit: the new report's id), and every run
under the key gets the first reservation, so a run after a failure lands on the same report
instead of making another. Where the caller knows the request's body (`/v1`), its fingerprint is
kept with the key: the same key with another body is refused (`KeyReused`), never answered with
the first call's answer.

Each key is one Redis key, `tipline:idempotency:{<esp>:<sha256 of the key>}` (hash-tagged on its
own: only single-key commands and scripts touch it), kept `tipline_idempotency_ttl_s` (24 h).
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import Response
from redis.exceptions import RedisError

from shared.clock import Clock
from shared.store import REDIS_UNAVAILABLE, Store

log = logging.getLogger("tipline.intake.idempotency")
KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
LEASE_S = 60.0
# For a call that reserves what it creates (a report id): a run after a failed one lands on the
# same report, so a retry may take over sooner.
SHORT_LEASE_S = 15.0
WAIT_S = 10.0

# Take a claim over only if it is still the one this caller read (another retry may have).
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


class KeyConflict(Exception):
    """The key is in use by another call still running: the client may retry later."""


class KeyReused(Exception):
    """The key was used for another endpoint or another body: a client error, not a retry."""


def fingerprint(body: bytes | str) -> str:
    data = body.encode() if isinstance(body, str) else body
    return hashlib.sha256(data).hexdigest()


class Idempotency:
    def __init__(self, redis: Store, ttl_s: int, clock: Clock = time.time) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self.clock = clock  # when leases lapse (kept in Redis: wall-clock seconds)
        self._take_over = redis.register_script(_TAKE_OVER)

    @staticmethod
    def valid(key: str) -> bool:
        return bool(KEY.match(key))

    @staticmethod
    def slot(esp_id: str, key: str) -> str:
        return f"tipline:idempotency:{{{esp_id}:{hashlib.sha256(key.encode()).hexdigest()}}}"

    async def run(
        self, esp_id: str, key: str, endpoint: str,
        call: Callable[[str | None], Awaitable[Response]], *, body: str | None = None,
        reserve: str | None = None, lease_s: float = LEASE_S,
    ) -> Response:
        """The answer of `call`, run once for this ESP's key (again only after a failed run).
        `body` is the request's fingerprint when known; `reserve` a value to keep with the
        claim: `call` gets the claim's reservation (the first run's)."""
        slot = self.slot(esp_id, key)
        claim: dict[str, Any] = {"endpoint": endpoint}
        if body is not None:
            claim["body"] = body
        if reserve is not None:
            claim["reserved"] = reserve
        mine = json.dumps({**claim, "lease": self.clock() + lease_s})
        if not await self._redis.set(slot, mine, nx=True, ex=self._ttl_s):
            taken = await self._replay_or_take(slot, endpoint, body, lease_s)
            if isinstance(taken, Response):
                return taken
            claim = taken
        try:
            response = await call(claim.get("reserved"))
        except BaseException:
            await self._give_up(slot, claim)
            raise
        if response.status_code >= 500 or "retry-after" in response.headers:
            # Not an answer to keep: "try again" (503, 429) is for this try only.
            await self._give_up(slot, claim)
            return response
        record = {
            **claim,
            "status": response.status_code,
            "media_type": response.media_type,
            "headers": {k: v for k, v in response.headers.items()
                        if k.lower() in ("www-authenticate",)},
            "response": base64.b64encode(bytes(response.body)).decode(),
        }
        try:
            await self._redis.set(slot, json.dumps(record), ex=self._ttl_s)
        except REDIS_UNAVAILABLE as exc:
            # The call is done and durable: its answer stands. A 503 now would send the client
            # back to find its own step taken ("already retracted", 409), for good.
            log.warning("the answer of %s under an Idempotency-Key was not kept: %r", endpoint,
                        exc)
        return response

    async def _give_up(self, slot: str, claim: dict[str, Any]) -> None:
        """Let the next retry run at once; with Redis away the lease lapses by itself."""
        with contextlib.suppress(RedisError, *REDIS_UNAVAILABLE):
            await self._redis.set(slot, json.dumps({**claim, "lease": 0}), xx=True,
                                  keepttl=True)

    async def _replay_or_take(
        self, slot: str, endpoint: str, body: str | None, lease_s: float
    ) -> Response | dict[str, Any]:
        """The first answer, or the claim taken over (a run failed or lapsed, or none left)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            raw = await self._redis.get(slot)
            if raw is None:  # expired just now: claim it afresh
                claim = {"endpoint": endpoint, **({"body": body} if body is not None else {})}
                fresh = json.dumps({**claim, "lease": self.clock() + lease_s})
                if await self._redis.set(slot, fresh, nx=True, ex=self._ttl_s):
                    return claim  # no reservation: the call makes its own
                continue
            record = json.loads(raw)
            if record["endpoint"] != endpoint:
                raise KeyReused(f"this Idempotency-Key was used for {record['endpoint']}")
            if body is not None and record.get("body", body) != body:
                raise KeyReused("this Idempotency-Key was used with another request body")
            if "status" in record:
                headers = {**record["headers"], "Idempotent-Replayed": "true"}
                return Response(base64.b64decode(record["response"]), record["status"],
                                headers, media_type=record["media_type"])
            if record["lease"] < self.clock():
                claim = {k: v for k, v in record.items() if k != "lease"}
                mine = json.dumps({**claim, "lease": self.clock() + lease_s})
                if await self._take_over(keys=[slot], args=[raw, mine]):
                    return claim
                continue
            if loop.time() > deadline:
                raise KeyConflict("a call with this Idempotency-Key is still in progress")
            await asyncio.sleep(0.05)
