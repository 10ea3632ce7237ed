"""Work due at a time, shared by every copy of a service: a Redis sorted set of members by when
they are due. `take` leases what is due (its time moves on by the lease) in one step, so two
copies never take the same member at once, and a copy that dies holding one leaves it to be taken
again when the lease ends. Members name their report in a hash tag-free string; the set itself is
one key (one slot of a Redis cluster).
"""

from shared.store import Store

# Take the due members: push each one's time on by the lease, so another copy does not take it.
_TAKE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, item in ipairs(items) do redis.call('ZADD', KEYS[1], ARGV[2], item) end
return items
"""


class DueIndex:
    def __init__(self, redis: Store, key: str) -> None:
        self._redis = redis
        self.key = key
        self._take = redis.register_script(_TAKE)

    async def add(self, members: dict[str, float], *, nx: bool = False, gt: bool = False
                  ) -> None:
        """Due at these times. `nx`: only members not there yet; `gt`: never earlier than now."""
        if members:
            await self._redis.zadd(self.key, members, nx=nx, gt=gt)  # type: ignore[arg-type]

    async def take(self, now: float, lease_s: float, limit: int = 100) -> list[str]:
        return [str(m) for m in await self._take(keys=[self.key], args=[now, now + lease_s, limit])]

    async def remove(self, *members: str) -> None:
        if members:
            await self._redis.zrem(self.key, *members)

    async def count(self) -> int:
        return int(await self._redis.zcard(self.key))
