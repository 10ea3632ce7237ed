"""A report's status and timeline: what happened to it, in order, each fact once.

Every service records its own facts here, keyed by the event id, so a redelivered event adds
nothing. Nothing is ever removed: a retraction is one more entry and a status, not an erasure.
"""

import json
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from shared.contracts import now

# A status only moves forward: a late "referred" never hides an earlier "retracted".
STATUS_RANK = {
    "submitted": 1,
    "validated": 2,
    "held": 3,
    "supplemented": 3,
    "referred": 4,
    "rejected": 7,
    "retracted": 8,
    "correction_escalated": 9,
}

_RECORD = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[2])
if ARGV[3] ~= '' then
  local rank = tonumber(redis.call('HGET', KEYS[1], 'rank') or '0')
  if tonumber(ARGV[4]) >= rank then
    redis.call('HSET', KEYS[1], 'status', ARGV[3], 'rank', ARGV[4])
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
return 1
"""


class Timeline:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)

    @staticmethod
    def _keys(report_id: str) -> list[str]:
        tag = f"tipline:{{{report_id}}}"
        return [f"{tag}:report", f"{tag}:seen", f"{tag}:timeline"]

    async def record(
        self,
        report_id: str,
        event_id: str,
        what: str,
        *,
        status: str | None = None,
        at: datetime | None = None,
        **detail: Any,
    ) -> bool:
        """Append one fact; False when this event was recorded before."""
        when = (at or now()).isoformat()
        entry = json.dumps({"at": when, "what": what, **detail}, default=str)
        rank = STATUS_RANK[status] if status else 0
        added = await self._record(
            keys=self._keys(report_id),
            args=[event_id, entry, status or "", rank, when],
        )
        return bool(added)

    async def set_fields(self, report_id: str, **fields: str) -> None:
        await self._redis.hset(self._keys(report_id)[0], mapping=dict[Any, Any](fields))

    async def fields(self, report_id: str) -> dict[str, str]:
        return dict(await self._redis.hgetall(self._keys(report_id)[0]))  # type: ignore[arg-type]

    async def entries(self, report_id: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in await self._redis.lrange(self._keys(report_id)[2], 0, -1)]
