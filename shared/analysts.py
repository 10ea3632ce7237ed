"""Staff credentials: passwords stored only as salted scrypt hashes in Redis, and a role each.

Roles: `analyst` (the analyst API's changes, the console) and `operator` (read-only: the console
and case files, never a change). One without a role recorded is an analyst. ESP credentials live
elsewhere, so they never open the analyst API or the console.
"""

import base64
import hashlib
import hmac
import os

from shared.logins import LoginGuard
from shared.store import Store

ANALYSTS = "tipline:analysts"
ROLES = "tipline:analyst-roles"
ROLE_NAMES = ("analyst", "operator")
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
    def __init__(self, redis: Store, guard: LoginGuard | None = None) -> None:
        self._redis = redis
        self._guard = guard or LoginGuard()
        self._verified: dict[str, str] = {}  # analyst -> stored hash last verified (skip scrypt)
        # An unknown analyst is checked against this, so it costs what a known one does.
        self._decoy = hash_secret(os.urandom(16).hex())

    async def add(self, analyst_id: str, password: str, role: str = "analyst") -> None:
        if not analyst_id or ":" in analyst_id or len(password) < 12:
            raise ValueError("an analyst id without ':' and a password of 12 or more characters")
        if role not in ROLE_NAMES:
            raise ValueError(f"a role is one of {', '.join(ROLE_NAMES)}")
        # Two keys in two cluster slots: no transaction (a cluster refuses one across slots).
        # The role first: stopped between the two, there is a role and no password (no login),
        # never a password with the role of before.
        await self._redis.hset(ROLES, analyst_id, role)
        await self._redis.hset(ANALYSTS, analyst_id, hash_secret(password))

    async def password_hash(self, analyst_id: str) -> str | None:
        """The stored hash (a new password, a new hash: the console ends sessions by it)."""
        found = await self._redis.hget(ANALYSTS, analyst_id)
        return str(found) if found is not None else None

    async def role(self, analyst_id: str) -> str:
        """`analyst` or `operator` (an analyst added before roles existed is an analyst)."""
        found = await self._redis.hget(ROLES, analyst_id)
        role = found.decode() if isinstance(found, bytes) else found
        return role if role in ROLE_NAMES else "analyst"

    async def verify(self, analyst_id: str, password: str, address: str) -> bool:
        """True when the password is right; LoginRefused when it is wrong again after too many
        failures of this analyst from this address, or when too many logins wait. scrypt runs in
        a thread, a few at a time (shared/logins.py)."""
        stored = await self.password_hash(analyst_id)
        key = hashlib.sha256(f"{analyst_id}\0{password}".encode()).hexdigest()
        if stored is not None and self._verified.get(key) == stored:
            return True
        expected = stored or self._decoy
        if not await self._guard.check(analyst_id, address,
                                       lambda: verify_secret(password, expected), same=key):
            return False
        if stored is None:
            return False
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[key] = stored
        return True
