"""Console sessions: a signed cookie naming the analyst, their role and when it expires.

`<base64url JSON>.<base64url HMAC-SHA256>` with `TIPLINE_CONSOLE_SESSION_SECRET`; nothing is
stored on the server, so every copy of the console accepts the cookie of another that shares
the secret. Pure functions: the web module sets and reads the cookie.
"""

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

COOKIE = "tipline_console"
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Session:
    analyst_id: str
    role: str  # analyst | operator
    expires: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, b"tipline-console|" + body.encode(), hashlib.sha256).digest())


def issue(secret: bytes, analyst_id: str, role: str, now: float, ttl_s: float) -> str:
    body = _b64(json.dumps({"a": analyst_id, "r": role, "e": now + ttl_s},
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
        session = Session(str(data["a"]), str(data["r"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now else None
