"""Idempotency-Key: a retried POST gets the first answer and creates nothing new.

The first call with a key claims it (SET NX) and stores its answer when done; a retry meanwhile
waits for that answer. Keys are per ESP, so two ESPs never see each other's answers. A call that
failed with a server error releases its key, so the retry runs again.
"""

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Awaitable, Callable

from fastapi.responses import Response

from shared.store import Store

KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
PENDING_S = 60
WAIT_S = 10.0


class KeyConflict(Exception):
    """The key is in use by another call (still running, or made for a different endpoint)."""


class Idempotency:
    def __init__(self, redis: Store, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @staticmethod
    def valid(key: str) -> bool:
        return bool(KEY.match(key))

    async def run(
        self, esp_id: str, key: str, endpoint: str, call: Callable[[], Awaitable[Response]]
    ) -> Response:
        slot = f"tipline:idempotency:{esp_id}:{hashlib.sha256(key.encode()).hexdigest()}"
        while not await self._redis.set(
            slot, json.dumps({"endpoint": endpoint}), nx=True, ex=PENDING_S
        ):
            replay = await self._replay(slot, endpoint)
            if replay is not None:
                return replay
            # The first call failed and released the key: this one runs.
        try:
            response = await call()
        except BaseException:
            await self._redis.delete(slot)
            raise
        if response.status_code >= 500:
            await self._redis.delete(slot)
            return response
        record = {
            "endpoint": endpoint,
            "status": response.status_code,
            "media_type": response.media_type,
            "headers": {k: v for k, v in response.headers.items()
                        if k.lower() in ("www-authenticate",)},
            "body": base64.b64encode(bytes(response.body)).decode(),
        }
        await self._redis.set(slot, json.dumps(record), ex=self._ttl_s)
        return response

    async def _replay(self, slot: str, endpoint: str) -> Response | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            raw = await self._redis.get(slot)
            if raw is None:
                return None
            record = json.loads(raw)
            if record["endpoint"] != endpoint:
                raise KeyConflict(f"this Idempotency-Key was used for {record['endpoint']}")
            if "status" in record:
                headers = {**record["headers"], "Idempotent-Replayed": "true"}
                return Response(base64.b64decode(record["body"]), record["status"], headers,
                                media_type=record["media_type"])
            if loop.time() > deadline:
                raise KeyConflict("a call with this Idempotency-Key is still in progress")
            await asyncio.sleep(0.05)
