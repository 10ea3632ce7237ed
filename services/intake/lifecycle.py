"""A report's life in intake, its draft: the state machine of the step script. Pure.

    open -> finished -> retracted        (post-finish retraction; not with strict compatibility)
    open -> retracted                    (the ESP cancels it)
    open -> abandoned                    (not finished in time: retracted by the timer)
    (a /v1 report, and one from the public form, is created finished)
    finished -> finished                 (a public reporter adds information, with the receipt)

Each command names its `Rule`: the states it may start from, the state it leads to, whether it
moves the abandonment deadline on (touch) or needs it passed (abandon), and what it adds (files).
`services/intake/drafts.py` runs a rule in one Lua script, with the command's event stored
pending beside it; `step` says what that script does. While a draft is open, a step past its
deadline is refused as expired, and the timer's abandon before it as not yet: a draft is never
both finished and abandoned. A refused step changes nothing.
"""

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple


class DraftState(StrEnum):
    OPEN = "open"
    FINISHED = "finished"
    RETRACTED = "retracted"
    ABANDONED = "abandoned"


class Mode(StrEnum):
    NONE = ""
    TOUCH = "touch"  # a change: the abandonment deadline moves on
    ABANDON = "abandon"  # the timer: only once the deadline has passed


class Refusal(StrEnum):
    """Why a step was refused, besides the state that refused it."""

    TAKEN = "taken"  # create: the id is in use
    MISSING = "missing"  # no such draft
    EXPIRED = "expired"  # open, but past its deadline (to be abandoned)
    NOT_YET = "not yet"  # abandon: the deadline has not passed
    DESCRIBED = "described"  # the file was described before


OK = "ok"


@dataclass(frozen=True)
class Rule:
    allowed: frozenset[DraftState] | None  # None: the draft must not exist yet
    to: DraftState | None = None  # None: the state stays
    mode: Mode = Mode.NONE

    def allows(self, state: str) -> bool:
        """May a draft in `state` take this step? (The step decides; this answers ahead.)"""
        return self.allowed is not None and state in self.allowed


OPEN_ONLY = frozenset({DraftState.OPEN})


@dataclass(frozen=True)
class Create:
    """Open a report (/ispws), or submit a whole one, finished from the start (/v1)."""

    state: DraftState
    fields: tuple[tuple[str, str], ...] = ()  # kept with the draft (the report, the ESP...)

    @property
    def rule(self) -> Rule:
        return Rule(None, self.state)


@dataclass(frozen=True)
class AddFile:
    entry: str  # the file's information (JSON)
    rule = Rule(OPEN_ONLY, mode=Mode.TOUCH)


@dataclass(frozen=True)
class DescribeFile:
    file_id: str
    entry: str  # the file's information with its details (JSON)
    rule = Rule(OPEN_ONLY, mode=Mode.TOUCH)


@dataclass(frozen=True)
class Finish:
    rule = Rule(OPEN_ONLY, DraftState.FINISHED)


@dataclass(frozen=True)
class Retract:
    strict: bool = False  # TIPLINE_STRICT_COMPAT: as NCMEC, no retraction after finish

    @property
    def rule(self) -> Rule:
        allowed = OPEN_ONLY if self.strict else OPEN_ONLY | {DraftState.FINISHED}
        return Rule(allowed, DraftState.RETRACTED)


@dataclass(frozen=True)
class Abandon:
    rule = Rule(OPEN_ONLY, DraftState.ABANDONED, Mode.ABANDON)


@dataclass(frozen=True)
class AddInformation:
    """What a public reporter adds to their report later: its event, the draft unchanged."""

    rule = Rule(frozenset({DraftState.FINISHED}))


Command = Create | AddFile | DescribeFile | Finish | Retract | Abandon | AddInformation


class Windows(NamedTuple):
    after_open_s: float
    after_change_s: float


def abandoned_after(opened_at: float, changed_at: float, after_open_s: float,
                    after_change_s: float) -> float:
    """When an open report is abandoned: the later of its two windows."""
    return max(opened_at + after_open_s, changed_at + after_change_s)


@dataclass(frozen=True)
class Draft:
    state: DraftState
    opened_at: float
    changed_at: float
    files: tuple[str, ...] = ()  # file entries, in order (a description is one more)
    described: frozenset[str] = frozenset()  # file ids
    pending: frozenset[str] = frozenset()  # event ids of accepted steps, not sent yet

    def deadline(self, windows: Windows) -> float:
        return abandoned_after(self.opened_at, self.changed_at, *windows)


@dataclass(frozen=True)
class Step:
    outcome: str  # OK, or why the step was refused: a Refusal or the state that refused it
    deadline: float | None  # the abandonment deadline (after the step), when there is a draft

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def step(draft: Draft | None, command: Command, at: float, windows: Windows,
         pending: str | None = None) -> tuple[Draft | None, Step]:
    """The draft after `command` at time `at`, its event `pending` (an event id) stored with it
    when accepted; and the step's answer."""
    rule = command.rule
    if rule.allowed is None:
        if draft is not None:
            return draft, Step(Refusal.TAKEN, None)
        assert rule.to is not None
        draft = Draft(rule.to, at, at)
        return _accepted(draft, pending), Step(OK, draft.deadline(windows))
    if draft is None:
        return None, Step(Refusal.MISSING, None)
    deadline = draft.deadline(windows)
    if draft.state is DraftState.OPEN:
        if rule.mode is Mode.ABANDON and at <= deadline:
            return draft, Step(Refusal.NOT_YET, deadline)
        if rule.mode is not Mode.ABANDON and at > deadline:
            return draft, Step(Refusal.EXPIRED, deadline)
    if not rule.allows(draft.state):
        return draft, Step(draft.state, deadline)
    after = replace(draft, state=rule.to or draft.state)
    match command:
        case AddFile(entry):
            after = replace(after, files=(*after.files, entry))
        case DescribeFile(file_id, entry):
            if file_id in draft.described:
                return draft, Step(Refusal.DESCRIBED, deadline)
            after = replace(after, files=(*after.files, entry),
                            described=after.described | {file_id})
    if rule.mode is Mode.TOUCH:
        after = replace(after, changed_at=at)
        deadline = after.deadline(windows)
    return _accepted(after, pending), Step(OK, deadline)


def sent(draft: Draft, event_id: str) -> Draft:
    """The pending event is in Kafka now: the outbox entry has done its job."""
    return replace(draft, pending=draft.pending - {event_id})


def _accepted(draft: Draft, pending: str | None) -> Draft:
    return draft if pending is None else replace(draft, pending=draft.pending | {pending})
