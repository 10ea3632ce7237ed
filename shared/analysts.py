"""Analyst credentials: role analyst, passwords stored only as salted scrypt hashes in Redis.

ESP credentials live elsewhere, so they never open the analyst API.
"""

import base64
import hashlib
import hmac
import os

from redis.asyncio import Redis

ANALYSTS = "tipline:analysts"
_N, _R, _P = 2**14, 8, 1


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


class AnalystDirectory:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._verified: dict[str, str] = {}  # analyst -> stored hash last verified (skip scrypt)

    async def add(self, analyst_id: str, password: str) -> None:
        if not analyst_id or ":" in analyst_id or len(password) < 12:
            raise ValueError("an analyst id without ':' and a password of 12 or more characters")
        await self._redis.hset(ANALYSTS, analyst_id, hash_secret(password))

    async def verify(self, analyst_id: str, password: str) -> bool:
        found = await self._redis.hget(ANALYSTS, analyst_id)
        if found is None:
            hash_secret(password)  # the same work as for a known analyst: no timing oracle
            return False
        stored = str(found)
        key = hashlib.sha256(f"{analyst_id}\0{password}".encode()).hexdigest()
        if self._verified.get(key) == stored:
            return True
        if verify_secret(password, stored):
            self._verified[key] = stored
            return True
        return False
