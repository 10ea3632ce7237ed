"""The ESP login: one HTTP Basic login an ESP, the same at both its doors (`/ispws` and `/v1`).

Each door declares it (`DECLARED`, for the OpenAPI) and asks `log_in`, then says a refusal in
its own words. The check is the ESP directory's (services/intake/esps.py): the password first,
then the limits (shared/logins.py), so a right password always gets in.
"""

from dataclasses import dataclass
from enum import StrEnum

from fastapi import Request
from fastapi.security import HTTPBasic

from shared.logins import LoginRefused


class Why(StrEnum):
    """Why a login was refused."""

    WRONG = "wrong"  # missing or wrong credentials
    TOO_MANY = "too many failures"  # of this name from this address: wait (Retry-After)
    BUSY = "busy"  # too many logins being checked at once: try again shortly (Retry-After)


@dataclass(frozen=True)
class LoginFailed:
    why: Why
    reason: str = ""
    retry_after_s: int | None = None


class _Declared(HTTPBasic):
    """HTTP Basic in the OpenAPI; it lets every request through: `log_in` checks."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


DECLARED = _Declared(scheme_name="esp", description="The ESP's login (`tipline esp add`), the "
                                                     "same for /ispws and /v1.")


async def log_in(request: Request) -> str | LoginFailed:
    """The ESP these credentials belong to (noted on the request for its log line), or why
    not."""
    address = request.client.host if request.client else "unknown"
    try:
        name = await request.app.state.esps.authenticate(request.headers.get("authorization"),
                                                         address)
    except LoginRefused as exc:
        return LoginFailed(Why.BUSY if exc.status == 503 else Why.TOO_MANY, exc.reason,
                           exc.retry_after_s)
    if name is None:
        return LoginFailed(Why.WRONG)
    request.state.esp_id = name
    return str(name)
