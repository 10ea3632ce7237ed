"""A case file held for the analyst or released for referral: the state machine of the case
file scripts (`services/supplementation/casefile.py`). Pure.

    (none) -> released                           a validated report arrives, nobody holds it
    (none) -> held -> releasing -> released      an analyst holds it, then releases it
    (none) -> held -> open -> released           released before the report arrived
    (none) -> held (for triage)                  a report from the public arrives: held always
    held -> closed                               an analyst closes it as not actionable

A report is released once: arriving again changes nothing. A closed report is never released,
and stays (closed is final; what is added to it is kept, for nobody). What an analyst adds
(supplements, amendments) is kept for the referral until the release begins; while the release
is under way it is refused; after it, it is kept as the next change after release (its
version), which the agencies receive as an amendment (services/notification/). Each script
answers the state it leaves the case in, or, when refused, the state that refused it.
"""

from dataclasses import dataclass, replace
from enum import StrEnum


class CaseState(StrEnum):
    OPEN = "open"  # released by the analyst before the report arrived: released when it does
    HELD = "held"
    RELEASING = "releasing"  # being published for referral (finish_release ends it)
    RELEASED = "released"
    CLOSED = "closed"  # by an analyst, as not actionable: never released


class CaseEvent(StrEnum):
    ARRIVE = "arrive"  # the validated report
    ARRIVE_PUBLIC = "arrive (public)"  # a validated report from the public: held for triage
    HOLD = "hold"
    CLOSE = "close"
    BEGIN_RELEASE = "begin release"
    FINISH_RELEASE = "finish release"
    KEEP_SUPPLEMENT = "keep supplement"
    KEEP_AMENDMENT = "keep amendment"


KEPT = "kept"
NONE = "none"


@dataclass(frozen=True)
class CaseFile:
    state: CaseState | None = None
    arrived: bool = False  # the validated report is in the case file
    supplements: int = 0  # kept for the referral
    amendments: int = 0
    after_release: int = 0  # changes kept after the release: the last one's version


@dataclass(frozen=True)
class Answer:
    says: str  # what the script answers
    refused: bool = False
    version: int = 0  # of a change kept after the release


S, E = CaseState, CaseEvent
_NOT_HOLDABLE = frozenset({S.RELEASING, S.RELEASED, S.CLOSED})


def apply(case: CaseFile, event: CaseEvent) -> tuple[CaseFile, Answer]:
    state = case.state
    match event:
        case E.ARRIVE | E.ARRIVE_PUBLIC:
            arrived = replace(case, arrived=True)
            if state in (S.HELD, S.RELEASING, S.CLOSED):
                return arrived, Answer(state)  # waits for the analyst (or stays closed)
            if state is None and event is E.ARRIVE_PUBLIC:
                return _to(arrived, S.HELD)  # nothing from the public goes out untriaged
            return _to(arrived, S.RELEASED)
        case E.HOLD:
            if state in _NOT_HOLDABLE:
                return case, Answer(state, refused=True)
            return _to(case, S.HELD)
        case E.CLOSE:
            if state is S.CLOSED:
                return case, Answer(state)
            if state is not S.HELD:
                return case, Answer(state or NONE, refused=True)
            return _to(case, S.CLOSED)
        case E.BEGIN_RELEASE:
            if state not in (S.HELD, S.RELEASING):
                return case, Answer(state or NONE, refused=True)
            return _to(case, S.RELEASING if case.arrived else S.OPEN)
        case E.FINISH_RELEASE:
            if state is S.CLOSED:  # only after a begun release, which a closed case refuses
                return case, Answer(state, refused=True)
            return _to(case, S.RELEASED)
    if state is S.RELEASING:
        return case, Answer(state, refused=True)
    if state is S.RELEASED:
        version = case.after_release + 1
        return replace(case, after_release=version), Answer(state, version=version)
    if event is E.KEEP_SUPPLEMENT:
        return replace(case, supplements=case.supplements + 1), Answer(KEPT)
    return replace(case, amendments=case.amendments + 1), Answer(KEPT)


def _to(case: CaseFile, state: CaseState) -> tuple[CaseFile, Answer]:
    return replace(case, state=state), Answer(state)
