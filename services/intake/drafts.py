"""A report's life in intake, one Lua script a step, and the outbox that makes a step durable.

The state machine is `services/intake/lifecycle.py` (pure): each command names its rule, and the
step script below runs that rule atomically:

    open -> finished -> retracted        (post-finish retraction)
    open -> retracted                    (the ESP cancels it)
    open -> abandoned                    (not finished in time: retracted by the timer)
    (a /v1 report starts finished)

A step that changes the report is accepted in one script: the state moves, and the event that
tells the pipeline is stored beside it, pending (`tipline:{id}:pending`). The event is then
published and only then marked sent (`Outbox`). So an accepted step is never lost: if the broker
is away or the process dies between the two, the pending event is published by the sweep, or by
the ESP's retry of the same step (which then answers as if it were the first call).

While a report is open, every step checks the abandonment deadline in the same script, and the
timer abandons a report only when the deadline from the stored times has passed: a report is
never both finished and abandoned. Nothing is removed.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from services.intake.lifecycle import (
    AddFile,
    Command,
    Create,
    DescribeFile,
    DraftState,
    Step,
    Windows,
    abandoned_after,
)
from shared.contracts import FileInfo
from shared.store import Store

# A command's rule (services/intake/lifecycle.py), atomically.
# KEYS: draft, pending, files, described.
# ARGV: 1 allowed states (comma list; 'new' = the draft must not exist), 2 new state ('' keeps),
#   3 now, 4 open window, 5 change window, 6 mode ('', 'touch' or 'abandon'),
#   7 pending event id ('' = none), 8 pending entry (JSON), 9 op ('', 'create', 'file' or
#   'described'), 10.. its arguments. Returns {outcome, deadline}: 'ok', or why it was refused
#   ('taken', 'missing', 'expired', 'not yet', 'described', or the state that refused it).
_STEP = """
local state = redis.call('HGET', KEYS[1], 'state')
local now, open_s, change_s = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local deadline = math.max(now + open_s, now + change_s)
if ARGV[1] == 'new' then
  if state then return {'taken', ''} end
else
  if not state then return {'missing', ''} end
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at'))
  local changed = tonumber(redis.call('HGET', KEYS[1], 'changed_at'))
  deadline = math.max(opened + open_s, changed + change_s)
  if state == 'open' and ARGV[6] == 'abandon' and now <= deadline then
    return {'not yet', tostring(deadline)}
  end
  if state == 'open' and ARGV[6] ~= 'abandon' and now > deadline then
    return {'expired', tostring(deadline)}
  end
  local allowed = false
  for s in string.gmatch(ARGV[1], '[^,]+') do if s == state then allowed = true end end
  if not allowed then return {state, tostring(deadline)} end
end
if ARGV[9] == 'create' then
  for i = 10, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
elseif ARGV[9] == 'described' then
  if redis.call('SADD', KEYS[4], ARGV[10]) == 0 then return {'described', tostring(deadline)} end
  redis.call('RPUSH', KEYS[3], ARGV[11])
elseif ARGV[9] == 'file' then
  redis.call('RPUSH', KEYS[3], ARGV[10])
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[2]) end
if ARGV[6] == 'touch' then
  redis.call('HSET', KEYS[1], 'changed_at', ARGV[3])
  deadline = math.max(tonumber(redis.call('HGET', KEYS[1], 'opened_at')) + open_s, now + change_s)
end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], ARGV[7], ARGV[8]) end
return {'ok', tostring(deadline)}
"""


@dataclass(frozen=True)
class Pending:
    """An event a step owes the pipeline, and the fact the report's timeline gets once it is out."""

    event_id: str
    topic: str
    value: str  # the event, JSON
    what: str
    status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"topic": self.topic, "value": self.value, "what": self.what,
                           "status": self.status, "detail": self.detail}, default=str)

    @classmethod
    def loads(cls, event_id: str, raw: str) -> "Pending":
        return cls(event_id=event_id, **json.loads(raw))


@dataclass(frozen=True)
class Record:
    """A report's draft as kept: who filed it and through which door, its state, the report as
    filed (JSON; its files are kept apart), and when it is abandoned if left open."""

    report_id: str
    esp_id: str
    state: DraftState
    opened_at: float
    deadline: float
    report: str
    supersedes: str | None = None
    via: str = ""  # "ispws", "v1" or "public"
    idempotency: str = ""  # the slot of the Idempotency-Key (or public form) it was made under
    receipt: str = ""  # from the public form: the hash of its receipt code


class Drafts:
    def __init__(self, redis: Store, *, after_open_s: float, after_change_s: float) -> None:
        self._redis = redis
        self.windows = Windows(after_open_s, after_change_s)
        self._step = redis.register_script(_STEP)

    @staticmethod
    def keys(report_id: str) -> list[str]:
        tag = f"tipline:{{{report_id}}}"
        return [f"{tag}:draft", f"{tag}:pending", f"{tag}:files", f"{tag}:described"]

    def deadline(self, opened_at: float, changed_at: float) -> float:
        return abandoned_after(opened_at, changed_at, *self.windows)

    async def step(self, report_id: str, command: Command, at: float,
                   pending: Pending | None = None) -> Step:
        """Take `command` at time `at` in one script, storing `pending` when it is accepted."""
        rule = command.rule
        allowed = "new" if rule.allowed is None else ",".join(sorted(rule.allowed))
        outcome, deadline = await self._step(keys=self.keys(report_id), args=[
            allowed, rule.to or "", repr(at), *self.windows, rule.mode,
            pending.event_id if pending else "", pending.dumps() if pending else "",
            *_operation(command),
        ])
        return Step(str(outcome), float(deadline) if deadline else None)

    async def create(
        self, report_id: str, esp_id: str, at: float, state: DraftState, pending: Pending,
        **fields: str,
    ) -> bool:
        """A new report's draft, its first event pending; False when the id is taken."""
        pairs = {"esp_id": esp_id, "opened_at": repr(at), "changed_at": repr(at), **fields}
        step = await self.step(report_id, Create(state, tuple(pairs.items())), at, pending)
        return step.ok

    async def record(self, report_id: str) -> Record | None:
        raw = await self._redis.hgetall(self.keys(report_id)[0])
        if not raw:
            return None
        draft = {str(k): str(v) for k, v in raw.items()}
        opened_at = float(draft["opened_at"])
        return Record(
            report_id, draft["esp_id"], DraftState(draft["state"]), opened_at,
            self.deadline(opened_at, float(draft["changed_at"])), draft.get("report", "{}"),
            draft.get("supersedes") or None, draft.get("via", ""), draft.get("idempotency", ""),
            draft.get("receipt", ""))

    async def pending(self, report_id: str, event_id: str) -> Pending | None:
        raw = await self._redis.hget(self.keys(report_id)[1], event_id)
        return Pending.loads(event_id, str(raw)) if raw is not None else None

    async def sent(self, report_id: str, event_id: str) -> None:
        # The event is in Kafka now, which is its record: the outbox entry has done its job.
        await self._redis.hdel(self.keys(report_id)[1], event_id)

    async def files(self, report_id: str) -> list[FileInfo]:
        """The report's files, each as last described (a description is a later entry)."""
        latest: dict[str, FileInfo] = {}
        for entry in await self._redis.lrange(self.keys(report_id)[2], 0, -1):
            info = FileInfo.model_validate_json(entry)
            latest[info.file_id] = info
        return list(latest.values())

    @staticmethod
    def _contents(report_id: str) -> str:
        return f"tipline:{{{report_id}}}:contents"  # sha256 -> the first file id with it

    async def first_copy(self, report_id: str, sha256: str) -> str | None:
        """The file of this report that first had this content, if one did."""
        first = await self._redis.hget(self._contents(report_id), sha256)
        return None if first is None else str(first)

    async def note_copy(self, report_id: str, sha256: str, file_id: str) -> None:
        await self._redis.hsetnx(self._contents(report_id), sha256, file_id)


def _operation(command: Command) -> list[str]:
    """What the step script adds to the draft for this command: its op and the op's arguments."""
    match command:
        case Create(_, fields):
            return ["create", *(x for pair in fields for x in pair)]
        case AddFile(entry):
            return ["file", entry]
        case DescribeFile(file_id, entry):
            return ["described", file_id, entry]
    return [""]
