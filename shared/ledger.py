"""The referral ledger: which agency got which report, and who owes it a correction.

Referral and retraction meet here, in Redis, one Lua script at a time, so they never interleave
inside a step. Each (report, agency) moves through:

    referring -> referred -> correcting -> corrected

- `claim` is the moment of referral: a report already retracted is never claimed, so it is never
  referred; agencies already claimed before the retraction are finished, then corrected.
- `confirm_referrals` runs after the broker acknowledged the referral notice. If the report was
  retracted meanwhile, the agency moves straight to `correcting` and the referral service sends
  the correction itself, after its own referral.
- `retract` marks the report (the mark is never removed) and moves every `referred` agency to
  `correcting`. Agencies still `referring` are left to the referral service.
So an agency is only ever corrected after its referral was delivered, and every agency that got a
referral of a retracted report reaches `correcting`. Corrections carry a stable notice id, so a
correction sent twice (by either side, on a redelivery) is one correction to the agency.

Amendments after release (`amend`) are appended, never replaced, and owed at once only to agencies
whose referral was delivered; the referral service sends every amendment to the agencies it
refers, after their referral. They leave the states above untouched, so the retraction invariant
is exactly as before.
"""

from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

_CLAIM = """
local retracted = redis.call('EXISTS', KEYS[2])
if retracted == 0 then
  for _, agency in ipairs(ARGV) do redis.call('HSETNX', KEYS[1], agency, 'referring') end
end
local out = {retracted}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == 'referring' then table.insert(out, all[i]) end
end
return out
"""

# Returns the agencies now owed a correction, then (after a '') every amendment so far.
_CONFIRM_REFERRALS = """
local retracted = redis.call('EXISTS', KEYS[2]) == 1
local out = {}
for _, agency in ipairs(ARGV) do
  local state = redis.call('HGET', KEYS[1], agency)
  if state == 'referring' then
    if retracted then state = 'correcting' else state = 'referred' end
    redis.call('HSET', KEYS[1], agency, state)
  end
  if state == 'correcting' then table.insert(out, agency) end
end
table.insert(out, '')
for _, amendment in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  table.insert(out, amendment)
end
return out
"""

_RETRACT = """
local first = redis.call('HSETNX', KEYS[2], 'at', ARGV[1])
if first == 1 then
  redis.call('HSET', KEYS[2], 'by', ARGV[2], 'actor', ARGV[3], 'reason', ARGV[4])
end
local out = {first}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local state = all[i + 1]
  if state == 'referred' then
    redis.call('HSET', KEYS[1], all[i], 'correcting')
    state = 'correcting'
  end
  if state == 'correcting' then table.insert(out, all[i]) end
end
return out
"""

_CONFIRM_CORRECTIONS = """
for _, agency in ipairs(ARGV) do
  if redis.call('HGET', KEYS[1], agency) == 'correcting' then
    redis.call('HSET', KEYS[1], agency, 'corrected')
  end
end
return #ARGV
"""

# An amendment after referral: appended to the report's amendments (never replaced) and owed at
# once to every agency whose referral was delivered. Agencies still `referring` get every
# amendment from the referral service, after their referral (see `amendments`).
_AMEND = """
local version = redis.call('RPUSH', KEYS[3], ARGV[1])
local out = {version}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local state = all[i + 1]
  if state == 'referred' or state == 'correcting' or state == 'corrected' then
    table.insert(out, all[i])
  end
end
return out
"""

RECEIVED_REFERRAL = frozenset({"referred", "correcting", "corrected"})


@dataclass(frozen=True)
class Claim:
    retracted: bool
    to_refer: list[str]


@dataclass(frozen=True)
class Confirmed:
    owed_correction: list[str]  # retracted while the referral was in flight
    amendments: list[str]  # every amendment after release, oldest first (JSON)


@dataclass(frozen=True)
class Retraction:
    first: bool
    to_correct: list[str]


@dataclass(frozen=True)
class Amended:
    version: int
    to_notify: list[str]


class Ledger:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._confirm_referrals = redis.register_script(_CONFIRM_REFERRALS)
        self._retract = redis.register_script(_RETRACT)
        self._confirm_corrections = redis.register_script(_CONFIRM_CORRECTIONS)
        self._amend = redis.register_script(_AMEND)

    @staticmethod
    def _keys(report_id: str) -> list[str]:
        # One hash tag a report, so both keys live on one slot of a Redis cluster.
        return [
            f"tipline:{{{report_id}}}:ledger",
            f"tipline:{{{report_id}}}:retracted",
            f"tipline:{{{report_id}}}:amendments",
        ]

    async def claim(self, report_id: str, agencies: list[str]) -> Claim:
        retracted, *to_refer = await self._claim(keys=self._keys(report_id), args=agencies)
        return Claim(bool(retracted), sorted(to_refer))

    async def confirm_referrals(self, report_id: str, agencies: list[str]) -> Confirmed:
        """Record delivered referrals: which agencies are now owed a correction, and the
        amendments they are owed (read in the same step, so none is missed or sent twice)."""
        out = [str(x) for x in await self._confirm_referrals(keys=self._keys(report_id),
                                                               args=agencies)]
        split = out.index("")
        return Confirmed(out[:split], out[split + 1:])

    async def retract(
        self, report_id: str, *, at: datetime, by: str, actor: str, reason: str
    ) -> Retraction:
        first, *to_correct = await self._retract(
            keys=self._keys(report_id), args=[at.isoformat(), by, actor, reason]
        )
        return Retraction(bool(first), sorted(to_correct))

    async def confirm_corrections(self, report_id: str, agencies: list[str]) -> None:
        await self._confirm_corrections(keys=self._keys(report_id), args=agencies)

    async def states(self, report_id: str) -> dict[str, str]:
        states = await self._redis.hgetall(self._keys(report_id)[0])
        return {str(k): str(v) for k, v in states.items()}

    async def retraction(self, report_id: str) -> dict[str, str] | None:
        mark = await self._redis.hgetall(self._keys(report_id)[1])
        return {str(k): str(v) for k, v in mark.items()} or None

    async def amend(self, report_id: str, amendment: str) -> Amended:
        """Append an amendment (JSON); returns its version and the agencies owed it now."""
        version, *to_notify = await self._amend(keys=self._keys(report_id), args=[amendment])
        return Amended(int(version), sorted(to_notify))

    async def amendments(self, report_id: str) -> list[str]:
        """Every amendment after release, oldest first (version n is item n - 1)."""
        return [str(a) for a in await self._redis.lrange(self._keys(report_id)[2], 0, -1)]
