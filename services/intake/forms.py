"""What intake keeps of the public's forms (services/intake/public.py), in Redis.

- The key every copy of intake signs form tokens and makes receipt codes with
  (services/intake/receipts.py): made by the first that asks.
- Each form's first filing, by its token's nonce: the report id it reserved and a digest of what
  it said, so the same form sent again (a double click, a resend) lands on the same report, and
  the page can say when the resend said something else. Kept as long as a token is valid, and
  an hour more.
"""

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass

from shared.store import Store

KEY = "tipline:form-key"


@dataclass(frozen=True)
class Filing:
    """A form's first filing."""

    report_id: str
    same: bool  # sent with the body it is sent with now


class Forms:
    def __init__(self, redis: Store, keep_s: int) -> None:
        self._redis = redis
        self._keep_s = keep_s

    async def key(self) -> bytes:
        await self._redis.set(KEY, base64.b64encode(secrets.token_bytes(32)).decode(), nx=True)
        return base64.b64decode(str(await self._redis.get(KEY)))

    @staticmethod
    def slot(nonce: str) -> str:
        """Where the report a form filed is named, by its token's nonce."""
        return f"tipline:forms:{{{hashlib.sha256(nonce.encode()).hexdigest()}}}"

    async def first_filing(self, nonce: str, report_id: str, body: str) -> Filing:
        """The filing of the form with this nonce: this one (`report_id`, `body`) when it is
        the first."""
        mine = {"report_id": report_id, "body": body}
        while not await self._redis.set(self.slot(nonce), json.dumps(mine), nx=True,
                                        ex=self._keep_s):
            stored = await self._redis.get(self.slot(nonce))
            if stored is not None:  # else it lapsed just now: claim it afresh
                first = json.loads(stored)
                return Filing(str(first["report_id"]), first["body"] == body)
        return Filing(report_id, True)
