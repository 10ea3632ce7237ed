"""The lifecycle of a report opened over /ispws, one Lua script at a time.

    open -> finished -> retracted (post-finish retraction)
    open -> retracted (the ESP cancels it)
    open -> abandoned (not finished in time; the timer retracts it)

Intake and the abandonment timer meet here, so a report is never both finished and abandoned:
while a report is open, every step (upload, file details, finish, retract) checks the deadline in
the same script that makes the step, and the timer abandons a report only when the deadline (from
the stored times, not from a possibly stale event) has passed. Nothing is removed.
"""

from dataclasses import dataclass

from redis.asyncio import Redis

# ARGV: allowed states (comma list), new state ('' keeps it), now, open window, change window,
# touch (1 moves last-change to now).
_STEP = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at'))
local changed = tonumber(redis.call('HGET', KEYS[1], 'changed_at'))
local deadline = math.max(opened + tonumber(ARGV[4]), changed + tonumber(ARGV[5]))
if state == 'open' and tonumber(ARGV[3]) > deadline then return {'expired', tostring(deadline)} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == state then allowed = true end end
if not allowed then return {state, tostring(deadline)} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[2]) end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'changed_at', ARGV[3])
  deadline = math.max(opened + tonumber(ARGV[4]), tonumber(ARGV[3]) + tonumber(ARGV[5]))
end
return {'ok', tostring(deadline)}
"""

# ARGV: now, open window, change window. Answers ok (abandoned now or before), the deadline when
# it has not passed, or the state that keeps the report from being abandoned.
_ABANDON = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
if state == 'abandoned' then return {'ok', ''} end
if state ~= 'open' then return {state, ''} end
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at'))
local changed = tonumber(redis.call('HGET', KEYS[1], 'changed_at'))
local deadline = math.max(opened + tonumber(ARGV[2]), changed + tonumber(ARGV[3]))
if tonumber(ARGV[1]) <= deadline then return {'not yet', tostring(deadline)} end
redis.call('HSET', KEYS[1], 'state', 'abandoned', 'abandoned_at', ARGV[1])
return {'ok', ''}
"""


@dataclass(frozen=True)
class Step:
    outcome: str  # ok, missing, expired, or the state that refused the step
    deadline: float | None


class Drafts:
    def __init__(self, redis: Redis, *, after_open_s: float, after_change_s: float) -> None:
        self._redis = redis
        self._windows = [after_open_s, after_change_s]
        self._step = redis.register_script(_STEP)
        self._abandon = redis.register_script(_ABANDON)

    @staticmethod
    def key(report_id: str) -> str:
        return f"tipline:{{{report_id}}}:draft"

    def deadline(self, opened_at: float, changed_at: float) -> float:
        return max(opened_at + self._windows[0], changed_at + self._windows[1])

    async def open(self, report_id: str, esp_id: str, at: float, **fields: str) -> None:
        mapping: dict[str | bytes, str | bytes] = {
            "state": "open", "esp_id": esp_id, "opened_at": repr(at), "changed_at": repr(at),
        }
        mapping.update(fields)
        await self._redis.hset(self.key(report_id), mapping=mapping)  # type: ignore[arg-type]

    async def step(
        self, report_id: str, at: float, *, allowed: tuple[str, ...] = ("open",),
        to: str = "", touch: bool = False,
    ) -> Step:
        outcome, deadline = await self._step(
            keys=[self.key(report_id)],
            args=[",".join(allowed), to, repr(at), *self._windows, "1" if touch else "0"],
        )
        return Step(str(outcome), float(deadline) if deadline else None)

    async def abandon(self, report_id: str, at: float) -> Step:
        outcome, deadline = await self._abandon(
            keys=[self.key(report_id)], args=[repr(at), *self._windows]
        )
        return Step(str(outcome), float(deadline) if deadline else None)

    async def get(self, report_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(self.key(report_id))
        return {str(k): str(v) for k, v in raw.items()}
