"""A case file held for the analyst or released for referral: the state machine of the case
file scripts (`services/supplementation/casefile.py`). Pure.

    (none) -> released                           a validated report arrives, nobody holds it
    (none) -> held -> releasing -> released      an analyst holds it, then releases it
    (none) -> held -> open -> released           released before the report arrived

A report is released once: arriving again changes nothing. What an analyst adds (supplements,
amendments) is kept for the referral until the release begins; while the release is under way
it is refused; after it, it is kept as the next change after release (its version), which the
agencies receive as an amendment (services/notification/). Each script answers the state it
leaves the case in, or, when refused, the state that refused it.
"""

from dataclasses import dataclass, replace
from enum import StrEnum


class CaseState(StrEnum):
    OPEN = "open"  # released by the analyst before the report arrived: released when it does
    HELD = "held"
    RELEASING = "releasing"  # being published for referral (finish_release ends it)
    RELEASED = "released"


class CaseEvent(StrEnum):
    ARRIVE = "arrive"  # the validated report
    HOLD = "hold"
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
_BEING_RELEASED = frozenset({S.RELEASING, S.RELEASED})


def apply(case: CaseFile, event: CaseEvent) -> tuple[CaseFile, Answer]:
    state = case.state
    match event:
        case E.ARRIVE:
            arrived = replace(case, arrived=True)
            if state in (S.HELD, S.RELEASING):
                return arrived, Answer(state)  # waits for the analyst's release
            return _to(arrived, S.RELEASED)
        case E.HOLD:
            if state in _BEING_RELEASED:
                return case, Answer(state, refused=True)
            return _to(case, S.HELD)
        case E.BEGIN_RELEASE:
            if state not in (S.HELD, S.RELEASING):
                return case, Answer(state or NONE, refused=True)
            return _to(case, S.RELEASING if case.arrived else S.OPEN)
        case E.FINISH_RELEASE:
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
