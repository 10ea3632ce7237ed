"""ESP credentials: one HTTP Basic login an ESP, the password stored only as a salted hash.

Kept in Redis (hash tipline:esps). A verified login is remembered for a short while in the process
(by a digest of the pair, never the password), so a busy ESP does not pay the key derivation on
every call. Checks run through a LoginGuard: off the event loop, a few at a time, failures
counted per name and address, and an unknown name costing what a known one does.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time

from shared.contracts import now
from shared.logins import LoginGuard
from shared.store import Store

KEY = "tipline:esps"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ITERATIONS = 100_000
REMEMBER_S = 60.0


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        expected = bytes.fromhex(digest)
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return scheme == "pbkdf2_sha256" and hmac.compare_digest(got, expected)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(name, password) from an Authorization: Basic header, or None."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class EspRegistry:
    def __init__(self, redis: Store, guard: LoginGuard | None = None) -> None:
        self._redis = redis
        self._guard = guard or LoginGuard()
        self._verified: dict[bytes, float] = {}
        # An unknown name is checked against this, so it costs what a known one does.
        self._decoy = hash_password(secrets.token_urlsafe(24))

    async def add(self, name: str) -> str:
        """Register an ESP (or give it a new password); returns the password, shown only once."""
        if not NAME.match(name):
            raise ValueError("an ESP name is 1-64 letters, digits, '.', '_' or '-'")
        password = secrets.token_urlsafe(24)
        record = {"hash": hash_password(password), "created_at": now().isoformat()}
        await self._redis.hset(KEY, name, json.dumps(record))
        return password

    async def names(self) -> dict[str, str]:
        """Every ESP and when its password was set."""
        raw = await self._redis.hgetall(KEY)
        return {str(n): json.loads(raw[n]).get("created_at", "") for n in sorted(raw)}

    async def authenticate(self, header: str | None, address: str) -> str | None:
        """The ESP's name when the Basic credentials are right, else None; LoginRefused when they
        are wrong again after too many failures of this name from this address, or when too
        many logins wait (shared/logins.py)."""
        pair = basic_credentials(header)
        if pair is None or not NAME.match(pair[0]):
            return None
        name, password = pair
        stored = await self._redis.hget(KEY, name)
        memo = hashlib.sha256(f"{name}\0{password}\0{stored!s}".encode()).digest()
        if stored is not None and self._verified.get(memo, 0.0) > time.monotonic():
            return name
        expected = json.loads(stored)["hash"] if stored is not None else self._decoy
        if not await self._guard.check(name, address,
                                       lambda: password_matches(password, expected), same=memo):
            return None
        if stored is None:
            return None
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[memo] = time.monotonic() + REMEMBER_S
        return name
