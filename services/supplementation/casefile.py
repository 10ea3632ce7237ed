"""The analyst's case file for a report (Redis): held or released, supplements, amendments and
the routing decided at release.

A report is released for referral once: at once when it arrives, or when an analyst releases
it if it was held first. Supplements and amendments made before release ride in the referral;
after release they are amendments to every agency that got it (services/notification/).
The routing is stored at the moment of release and reused on every redelivery, so a later
change of rules never re-routes a report already released.

A report from the public arrives held for triage, and is listed in the triage queue (oldest
first) until an analyst releases or closes it; its reporter's contact details (if any) and what
the reporter adds later with the receipt are kept in the case file for the analysts.

States (services/supplementation/holds.py says what each script below does):
(none) -> held -> releasing -> released, or (none) -> released; held -> closed.
"""

import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from services.supplementation.holds import CaseState
from shared.audiences import Kind
from shared.contracts import (
    Amendment,
    Change,
    Fact,
    InformationAdded,
    Priority,
    Report,
    ReporterContact,
    ReportValidated,
    Source,
    Supplement,
)
from shared.store import Store, run_script

# The triage queue: held reports from the public, by when they arrived (an index: the case file
# says the state; an entry whose case was released or closed is dropped from it).
TRIAGE = "tipline:triage"

# A validated report arrives: release it unless an analyst holds it (or closed it), or it is
# from the public (ARGV[4]): then it is held for triage. Released, the script answers what the
# release needs in the same step: the report (only when it differs from the one arriving), the
# ESP, the routing and the analyst's additions. ARGV[3] is the routing decided on the report as
# it arrived; it is stored when it is the case's report and no amendment changes it (the first
# routing stored stays). ARGV[5]: the public reporter's contact details ('' = none).
_ARRIVE = """
redis.call('HSETNX', KEYS[1], 'report', ARGV[1])
redis.call('HSETNX', KEYS[1], 'esp_id', ARGV[2])
redis.call('HSETNX', KEYS[1], 'source', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[1], 'contact', ARGV[5]) end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'held' or state == 'releasing' or state == 'closed' then return {state} end
if not state and ARGV[4] == 'public' then
  redis.call('HSET', KEYS[1], 'state', 'held', 'held_by', 'triage')
  return {'held'}
end
redis.call('HSET', KEYS[1], 'state', 'released')
local amendments = redis.call('LRANGE', KEYS[3], 0, -1)
local same = redis.call('HGET', KEYS[1], 'report') == ARGV[1]
if same and #amendments == 0 and ARGV[3] ~= '' then
  redis.call('HSETNX', KEYS[1], 'routing', ARGV[3])
end
local stored = redis.call('HMGET', KEYS[1], 'report', 'esp_id', 'routing')
if same then stored[1] = '' end
return {'released', stored[1], stored[2], stored[3] or '', redis.call('LRANGE', KEYS[2], 0, -1),
        amendments}
"""

_HOLD = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'released' or state == 'releasing' or state == 'closed' then return state end
redis.call('HSET', KEYS[1], 'state', 'held', 'hold_reason', ARGV[1], 'held_by', ARGV[2])
return 'held'
"""

# Close a held report as not actionable (the first closing's analyst, reason and time stay).
_CLOSE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'closed' then return state end
if state ~= 'held' then return state or 'none' end
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_by', ARGV[1], 'close_reason', ARGV[2],
           'closed_at', ARGV[3])
return 'closed'
"""

_FINISH_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'closed' then return 'closed' end
redis.call('HSET', KEYS[1], 'state', 'released')
return 'released'
"""

_RELEASE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'held' and state ~= 'releasing' then return state or 'none' end
if redis.call('HEXISTS', KEYS[1], 'report') == 0 then
  redis.call('HSET', KEYS[1], 'state', 'open')
  return 'open'
end
redis.call('HSET', KEYS[1], 'state', 'releasing')
return 'releasing'
"""

# Keep an addition for the referral before the release, or as the next change after it (its
# version); refused while the release is under way.
_KEEP = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'releasing' then return {state, 0} end
if state == 'released' then return {state, redis.call('RPUSH', KEYS[3], ARGV[2])} end
redis.call('RPUSH', KEYS[2], ARGV[1])
return {'kept', 0}
"""

# Mark changes after release up to `version` sent (the mark only moves forward).
_SENT = """
if tonumber(redis.call('HGET', KEYS[1], 'sent_after_release') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'sent_after_release', ARGV[1])
end
"""


@dataclass(frozen=True)
class Closure:
    analyst_id: str
    reason: str
    at: float


class Routing(BaseModel):
    """Where a released report goes: decided once, on the report as the analyst established it,
    and kept with its case, so every redelivery goes the same way."""

    agencies: list[str]
    basis: str  # which rule placed it
    rules_version: str
    priority: str  # a Priority's name, in lower case

    @property
    def level(self) -> Priority:
        return Priority[self.priority.upper()]


@dataclass(frozen=True)
class Case:
    state: str
    esp_id: str | None
    report: Report | None
    supplements: list[Supplement]
    amendments: list[Amendment]
    routing: Routing | None
    after_release: list[Change] = field(default_factory=list)  # version n is item n - 1
    sent_after_release: int = 0  # versions up to this one were published for the agencies
    retracted: bool = False
    source: Source = "esp"
    contact: ReporterContact | None = None  # a public reporter's, if they gave any
    additions: list[InformationAdded] = field(default_factory=list)  # the reporter's, in order
    closed: Closure | None = None

    @property
    def unsent(self) -> list[tuple[int, Change]]:
        """Changes after release not yet published for the agencies, with their versions."""
        return [(v, c) for v, c in enumerate(self.after_release, start=1)
                if v > self.sent_after_release]


@dataclass(frozen=True)
class Arrived:
    state: str  # released, or the analyst's state that holds it
    case: Case | None = None  # released: what the release needs (without changes after it)


@dataclass(frozen=True)
class Kept:
    state: str  # "kept" for the referral, or the state of the case
    version: int = 0  # of a change kept after the release


class CaseFiles:
    def __init__(self, redis: Store) -> None:
        self._redis = redis
        self._arrive = redis.register_script(_ARRIVE)
        self._hold = redis.register_script(_HOLD)
        self._close = redis.register_script(_CLOSE)
        self._release = redis.register_script(_RELEASE)
        self._finish_release = redis.register_script(_FINISH_RELEASE)
        self._keep = redis.register_script(_KEEP)
        self._sent = redis.register_script(_SENT)

    @staticmethod
    def _keys(report_id: str) -> list[str]:
        tag = f"tipline:{{{report_id}}}"
        return [f"{tag}:case", f"{tag}:case:supplements", f"{tag}:case:amendments",
                f"{tag}:case:after-release", f"{tag}:case:retracted", f"{tag}:case:additions"]

    async def arrive(self, arrivals: list[tuple[ReportValidated, Routing | None]]
                     ) -> list[Arrived]:
        """Validated reports (each with the routing decided on it) arrive, in one round trip:
        the state each is in now (released, or held: by an analyst, or for triage) and,
        released, its case as the release needs it. Reports from the public held for triage
        join the triage queue (a second round trip, when there are any)."""
        answers = await run_script(self._redis, self._arrive, [
            (self._keys(e.report_id)[:3],
             [e.report.model_dump_json(), e.esp_id, routing.model_dump_json() if routing else "",
              e.source, e.contact.model_dump_json(exclude_none=True) if e.contact else ""])
            for e, routing in arrivals])
        out, triage = [], {}
        for (event, _), (state, *found) in zip(arrivals, answers, strict=True):
            if state != CaseState.RELEASED:
                out.append(Arrived(str(state)))
                if state == CaseState.HELD and event.source == "public":
                    triage[event.report_id] = event.occurred_at.timestamp()
                continue
            stored, esp_id, routing, supplements, amendments = found
            out.append(Arrived(str(state), Case(
                state=str(state), esp_id=str(esp_id),
                report=Report.model_validate_json(stored) if stored else event.report,
                supplements=[Supplement.model_validate_json(s) for s in supplements],
                amendments=[Amendment.model_validate_json(a) for a in amendments],
                routing=Routing.model_validate_json(routing) if routing else None,
                source=event.source)))
        if triage:  # a redelivery keeps the first arrival's place in the queue
            await self._redis.zadd(TRIAGE, triage, nx=True)
        return out

    async def hold(self, report_id: str, reason: str, analyst_id: str) -> str:
        return str(await self._hold(keys=self._keys(report_id)[:1], args=[reason, analyst_id]))

    async def close(self, report_id: str, reason: str, analyst_id: str) -> str:
        """Close a held report as not actionable: 'closed', or the state that refused it."""
        state = str(await self._close(keys=self._keys(report_id)[:1],
                                      args=[analyst_id, reason, repr(time.time())]))
        if state == CaseState.CLOSED:
            await self._redis.zrem(TRIAGE, report_id)
        return state

    async def begin_release(self, report_id: str) -> str:
        return str(await self._release(keys=self._keys(report_id)[:1]))

    async def finish_release(self, report_id: str) -> str:
        """'released', or 'closed' (a closed case is never released)."""
        state = str(await self._finish_release(keys=self._keys(report_id)[:1]))
        await self._redis.zrem(TRIAGE, report_id)
        return state

    async def triage(self, limit: int, offset: int = 0) -> list[tuple[str, float, Case]]:
        """The triage queue, oldest first: (report id, arrived at, its case) of public reports
        still held; entries of cases that moved on are dropped from the index as they are met."""
        found: list[Any] = await self._redis.zrangebyscore(
            TRIAGE, "-inf", "+inf", start=offset, num=limit, withscores=True)
        entries = [(str(r), float(at)) for r, at in found]
        ids = [r for r, _ in entries]
        cases = await self.get_many(ids) if ids else []
        out, gone = [], []
        for (report_id, at), case in zip(entries, cases, strict=True):
            if case is None or case.state != CaseState.HELD:
                gone.append(report_id)
            else:
                out.append((report_id, at, case))
        if gone:
            await self._redis.zrem(TRIAGE, *gone)
        return out

    async def waiting(self) -> int:
        """How many entries the triage queue holds."""
        return int(await self._redis.zcard(TRIAGE))

    async def add_information(self, additions: list[InformationAdded]) -> None:
        """What public reporters added, each kept once (by its event id), in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for added in additions:
                pipe.hsetnx(self._keys(added.report_id)[5], added.event_id,
                            added.model_dump_json())
            await pipe.execute()

    async def keep_supplement(self, report_id: str, supplement: Supplement) -> Kept:
        return await self._kept(report_id, 1, supplement.model_dump_json(),
                                Change(supplement=supplement))

    async def keep_amendment(self, report_id: str, amendment: Amendment) -> Kept:
        return await self._kept(report_id, 2, amendment.model_dump_json(),
                                Change(amendment=amendment))

    async def _kept(self, report_id: str, kind: int, item: str, change: Change) -> Kept:
        keys = self._keys(report_id)
        state, version = await self._keep(keys=[keys[0], keys[kind], keys[3]],
                                          args=[item, change.model_dump_json(exclude_none=True)])
        return Kept(str(state), int(version))

    async def sent(self, report_id: str, version: int) -> None:
        await self._sent(keys=self._keys(report_id)[:1], args=[version])

    async def retracted(self, report_ids: list[str]) -> None:
        """Mark reports retracted (the retraction service said so): no more changes to them."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for report_id in report_ids:
                pipe.set(self._keys(report_id)[4], 1)
            await pipe.execute()

    async def route_once(self, routings: dict[str, Routing]) -> dict[str, Routing]:
        """The first routing stored for each report wins: a report is never routed twice. One
        round trip for them all."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for report_id, routing in routings.items():
                key = self._keys(report_id)[0]
                pipe.hsetnx(key, "routing", routing.model_dump_json())
                pipe.hget(key, "routing")
            stored = (await pipe.execute())[1::2]
        return {r: Routing.model_validate_json(s) for r, s in zip(routings, stored, strict=True)}

    async def get(self, report_id: str) -> Case | None:
        return (await self.get_many([report_id]))[0]

    async def get_many(self, report_ids: list[str], *,
                       after_release: bool = True) -> list[Case | None]:
        """Case files, in one round trip (None for a report with none); without what came
        after the release (changes, the retraction mark) when the caller is the release."""
        per = 6 if after_release else 3
        async with self._redis.pipeline(transaction=False) as pipe:
            for report_id in report_ids:
                case_key, supplements_key, amendments_key, after_key, retracted_key, added_key = (
                    self._keys(report_id))
                pipe.hgetall(case_key)
                pipe.lrange(supplements_key, 0, -1)
                pipe.lrange(amendments_key, 0, -1)
                if after_release:
                    pipe.lrange(after_key, 0, -1)
                    pipe.exists(retracted_key)
                    pipe.hgetall(added_key)
            found = await pipe.execute()
        return [_case(*found[i:i + per]) for i in range(0, len(found), per)]


def _case(case: dict[Any, Any], supplements: list[Any], amendments: list[Any],
          after_release: list[Any] | None = None, retracted: int = 0,
          additions: dict[Any, Any] | None = None) -> Case | None:
    fields = {str(k): str(v) for k, v in case.items()}
    if not fields:
        return None
    added = [InformationAdded.model_validate_json(a) for a in (additions or {}).values()]
    closed = (Closure(fields["closed_by"], fields.get("close_reason", ""),
                      float(fields.get("closed_at", 0))) if "closed_by" in fields else None)
    return Case(
        state=fields.get("state", CaseState.OPEN),
        esp_id=fields.get("esp_id"),
        report=Report.model_validate_json(fields["report"]) if "report" in fields else None,
        supplements=[Supplement.model_validate_json(s) for s in supplements],
        amendments=[Amendment.model_validate_json(a) for a in amendments],
        routing=Routing.model_validate_json(fields["routing"]) if "routing" in fields else None,
        after_release=[Change.model_validate_json(c) for c in after_release or ()],
        sent_after_release=int(fields.get("sent_after_release", 0)),
        retracted=bool(retracted),
        source="public" if fields.get("source") == "public" else "esp",
        contact=(ReporterContact.model_validate_json(fields["contact"])
                 if "contact" in fields else None),
        additions=sorted(added, key=lambda a: a.occurred_at),
        closed=closed,
    )


def addition_facts(case: Case) -> list[Fact]:
    """The timeline entry of every supplement and amendment in the case, each under its own id
    (so sending them again adds nothing)."""
    changes = [Change(supplement=s) for s in case.supplements]
    changes += [Change(amendment=a) for a in case.amendments]
    facts = []
    for change in [*changes, *case.after_release]:
        if change.supplement is not None:
            s = change.supplement
            facts.append(Fact(s.supplement_id, Kind.SUPPLEMENT_ADDED, detail={
                "analyst": s.analyst_id, "kind": s.kind, "verified": s.verified,
                "source": s.source, "added_at": s.added_at.isoformat()}))
        elif change.amendment is not None:
            a = change.amendment
            facts.append(Fact(a.amendment_id, Kind.AMENDED, detail={
                "analyst": a.analyst_id, "path": a.path, "reason": a.reason,
                "amended_at": a.amended_at.isoformat()}))
    return facts
