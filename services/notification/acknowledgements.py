"""A notice awaiting its agency's acknowledgement: the state machine of the notices awaiting
acknowledgement (`services/notification/awaiting.py`). Pure.

    (untracked) -> awaiting -> acked | escalated

Tracking a notice again changes nothing; a settled notice (acked or escalated) stays as it is, so
a late ack of an escalated notice is recorded as late and the notice stays escalated.
"""

from dataclasses import dataclass
from enum import StrEnum


class NoticeState(StrEnum):
    AWAITING = "awaiting"
    ACKED = "acked"
    ESCALATED = "escalated"

    @property
    def settled(self) -> bool:
        return self is not NoticeState.AWAITING


class NoticeEvent(StrEnum):
    TRACK = "track"
    ACKNOWLEDGE = "acknowledge"
    ESCALATE = "escalate"


SETTLES_AS = {NoticeEvent.ACKNOWLEDGE: NoticeState.ACKED,
              NoticeEvent.ESCALATE: NoticeState.ESCALATED}


@dataclass(frozen=True)
class Refused:
    reason: str


def settle(state: NoticeState | None, event: NoticeEvent) -> NoticeState | Refused:
    """A notice's next state (`None`: not tracked) when `event` happens to it."""
    if event is NoticeEvent.TRACK:
        return NoticeState.AWAITING if state is None else Refused("tracked before")
    if state is None:
        return Refused("not tracked")
    if state.settled:
        return Refused(f"{state} already")
    return SETTLES_AS[event]


def escalates(resends: int, max_resends: int) -> bool:
    """An overdue notice is escalated, not re-sent, once it was re-sent `max_resends` times
    (`resends` counts the re-send about to happen)."""
    return resends > max_resends
