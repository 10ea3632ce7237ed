"""Console sessions: a signed cookie, and what ends one before it expires.

The cookie is `<base64url JSON>.<base64url HMAC-SHA256>` with `TIPLINE_CONSOLE_SESSION_SECRET`:
the staff member, their role, when it was issued and when it expires, and a fingerprint (an
HMAC) of their password's stored hash. Every copy of the console that shares the secret accepts
another's cookie, and at every request (`Sessions.current`) refuses one whose holder
- signed out since it was issued: signing out ends all of that person's sessions, everywhere.
  When each staff member last signed out is the console's own state, its one Redis key
  (SIGNED_OUT): sessions are the console's business, so the analyst directory stays written by
  `tipline analyst` alone (docs/architecture.md, "Who owns what");
- has another password since (`tipline analyst add` again stores another hash, so the
  fingerprint differs), or is gone from the directory.
`issue` and `check` are pure (the signature and the expiry); `Sessions` reads and writes Redis.
A cookie of a version before this one lacks the fingerprint: its holder signs in again.
"""

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from shared.analysts import AnalystDirectory
from shared.store import Store

COOKIE = "tipline_console"
MIN_SECRET_LENGTH = 32
SIGNED_OUT = "tipline:console:signed-out"  # staff member -> when they last signed out


@dataclass(frozen=True)
class Session:
    analyst_id: str
    role: str  # analyst | operator
    expires: float
    issued: float
    password: str  # the fingerprint of the stored password hash it was issued under


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, b"tipline-console|" + body.encode(), hashlib.sha256).digest())


def fingerprint(secret: bytes, stored: str) -> str:
    """Tells a password change without putting anything of the hash in the cookie."""
    digest = hmac.new(secret, b"tipline-console-password|" + stored.encode(), hashlib.sha256)
    return _b64(digest.digest())[:22]


def issue(secret: bytes, analyst_id: str, role: str, now: float, ttl_s: float,
          stored: str) -> str:
    body = _b64(json.dumps({"a": analyst_id, "r": role, "i": now, "e": now + ttl_s,
                            "p": fingerprint(secret, stored)},
                           separators=(",", ":")).encode())
    return f"{body}.{_mac(secret, body)}"


def check(secret: bytes, cookie: str | None, now: float) -> Session | None:
    """The session a cookie carries, or None: unsigned, altered, expired or malformed."""
    if not cookie or cookie.count(".") != 1:
        return None
    body, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    try:
        data = json.loads(_unb64(body))
        session = Session(str(data["a"]), str(data["r"]), float(data["e"]), float(data["i"]),
                          str(data["p"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now else None


class Sessions:
    """Sessions opened at sign-in and ended at sign-out or a password change."""

    def __init__(self, redis: Store, directory: AnalystDirectory, secret: bytes,
                 ttl_s: float, *, secure: bool = False) -> None:
        self._redis = redis
        self._directory = directory
        self._secret = secret
        self.ttl_s = ttl_s
        self.secure = secure  # TIPLINE_CONSOLE_SECURE_COOKIE: behind a TLS proxy

    async def open(self, analyst_id: str, role: str, now: float) -> str:
        """A new session's cookie (the password was checked just now)."""
        stored = await self._directory.password_hash(analyst_id) or ""
        return issue(self._secret, analyst_id, role, now, self.ttl_s, stored)

    async def current(self, cookie: str | None, now: float) -> Session | None:
        """The cookie's session if it still holds; Redis away raises (503, not "sign in")."""
        session = check(self._secret, cookie, now)
        if session is None:
            return None
        stored = await self._directory.password_hash(session.analyst_id)
        if stored is None or not hmac.compare_digest(session.password,
                                                     fingerprint(self._secret, stored)):
            return None
        signed_out = await self._redis.hget(SIGNED_OUT, session.analyst_id)
        if signed_out is not None and float(signed_out) >= session.issued:
            return None
        return session

    async def close(self, session: Session, now: float) -> None:
        """Sign out: every session of this staff member issued until now ends."""
        await self._redis.hset(SIGNED_OUT, session.analyst_id, repr(now))
