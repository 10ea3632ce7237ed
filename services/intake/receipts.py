"""The public form's tokens and receipts, instead of an account or a third party's CAPTCHA.

- A **form token** is served in every form: when it was served, a random nonce, and an HMAC over
  both and what the form is for. A form is taken only with a token of ours, sent no sooner than a
  person could have filled it in and no later than it is valid (`Tokens.check`). Its nonce names
  the submission: the same form sent twice (a double click, a resend) is one report.
- A **receipt code** is made from the form's nonce with the same key (`Tokens.code`), so a resend
  of the form shows the same code, and nothing stores it: intake keeps only its SHA-256 beside the
  report (`code_hash`), to check it when the reporter adds information.

The key is made once by the first intake that needs it and kept in Redis
(services/intake/forms.py), so every copy of intake accepts the others' tokens and no deployment
step is needed. Pure.
"""

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

# Crockford's base32: no I, L, O or U, so a code read aloud or copied by hand is not mistaken.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 20  # 100 bits
_MISREAD = str.maketrans({"I": "1", "L": "1", "O": "0"})


class Purpose(StrEnum):
    REPORT = "report"
    ADD = "add"


class Problem(StrEnum):
    """Why a form's token was not taken."""

    INVALID = "invalid"  # none, or not ours: a forged or damaged form
    TOO_SOON = "too soon"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Token:
    nonce: str
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tokens:
    def __init__(self, key: bytes, min_s: float, max_s: float) -> None:
        self._key = key
        self.min_s, self.max_s = min_s, max_s

    def _mac(self, purpose: Purpose, issued_at: int, nonce: str) -> str:
        return _b64(hmac.digest(self._key, f"{purpose}|{issued_at}|{nonce}".encode(), "sha256"))

    def issue(self, purpose: Purpose, now: float) -> str:
        issued_at, nonce = int(now), _b64(secrets.token_bytes(16))
        return f"{issued_at}.{nonce}.{self._mac(purpose, issued_at, nonce)}"

    def check(self, token: str, purpose: Purpose, now: float) -> Token | Problem:
        issued, _, rest = token.partition(".")
        nonce, _, mac = rest.partition(".")
        if not issued.isdigit() or len(issued) > 12 or not nonce or not hmac.compare_digest(
                mac.encode(), self._mac(purpose, int(issued), nonce).encode()):
            return Problem.INVALID
        age = now - int(issued)
        if age < self.min_s:
            return Problem.TOO_SOON
        if age > self.max_s:
            return Problem.EXPIRED
        return Token(nonce, int(issued))

    def code(self, nonce: str) -> str:
        """The receipt code of the report a form with this nonce filed, grouped for reading."""
        number = int.from_bytes(hmac.digest(self._key, f"receipt|{nonce}".encode(), "sha256"))
        digits = "".join(ALPHABET[(number >> (5 * i)) & 31] for i in range(CODE_LENGTH))
        return "-".join(digits[i:i + 4] for i in range(0, CODE_LENGTH, 4))


def normalized(code: str) -> str:
    """A code as typed (any case, spaces or dashes, I/L for 1, O for 0) as it was made."""
    return "".join(c for c in code.upper().translate(_MISREAD) if c in ALPHABET)


def code_hash(code: str) -> str:
    """What is kept to check a code: a code carries 100 random bits, so a plain hash will do."""
    return hashlib.sha256(normalized(code).encode()).hexdigest()


def code_matches(code: str, kept: str) -> bool:
    return len(normalized(code)) == CODE_LENGTH and hmac.compare_digest(code_hash(code), kept)
