"""What intake's reporting core answers, in the domain's words. Pure.

A step is accepted (`Opened`, `Submitted`, `FileAdded`, `FileDescribed`, `Finished`,
`RetractionRequested`, `Added`) or `Refused` with a `Reason`; a report is read as the ESP may
see it (`ReportView`). Each door says these in its own words: `/ispws` and `/v1` as CyberTipline
response codes (services/intake/answers.py), the public form as pages. A store that is away
(Redis, the broker) is no answer of the core's: it raises, and every door answers 503 with
Retry-After (services/intake/main.py).
"""

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from services.intake.lifecycle import DraftState, Refusal
from shared.audiences import EspStatus
from shared.contracts import FieldError, FileInfo


class Reason(StrEnum):
    """Why a step was refused."""

    NO_SUCH_REPORT = "no such report"  # none by that id, or another ESP's: the same answer
    NO_SUCH_FILE = "no such file"  # in this report
    FINISHED = "finished"  # the report was finished (or submitted whole) before
    RETRACTED = "retracted"
    ABANDONED = "abandoned"  # not finished in time: retracted, or to be at the next tick
    DESCRIBED = "described before"  # a file's details are sent once
    OPEN = "still open"  # information is added to a finished report only
    INVALID = "invalid"  # the report rules (shared/rules.py) refuse it: see `errors`
    TOO_LARGE = "too large"  # its event would be larger than the pipeline takes


@dataclass(frozen=True)
class Refused:
    reason: Reason
    detail: str = ""  # what the ESP is told besides the reason
    report_id: str | None = None
    file_id: str | None = None
    errors: list[FieldError] = field(default_factory=list)


# Why the draft refused a step (services/intake/lifecycle.py), as the ESP is told it. "taken"
# and "not yet" are no answers to anyone: the core draws another id, the timer waits.
REFUSED_BY: dict[str, Reason] = {
    Refusal.MISSING: Reason.NO_SUCH_REPORT,
    Refusal.EXPIRED: Reason.ABANDONED,
    Refusal.DESCRIBED: Reason.DESCRIBED,
    DraftState.OPEN: Reason.OPEN,
    DraftState.FINISHED: Reason.FINISHED,
    DraftState.RETRACTED: Reason.RETRACTED,
    DraftState.ABANDONED: Reason.ABANDONED,
}


def refused_by(outcome: str, report_id: str) -> Refused:
    """The refusal of a step the draft refused with `outcome` (a Refusal or its state)."""
    return Refused(REFUSED_BY[outcome], report_id=report_id)


@dataclass(frozen=True)
class Opened:
    """/ispws submit: a report opened, to be completed with files and finished."""

    report_id: str


@dataclass(frozen=True)
class Submitted:
    """A whole report, finished from the start (/v1, the public form); `at` when it was
    received (the first time, for a retry under the same reservation)."""

    report_id: str
    at: float


@dataclass(frozen=True)
class FileAdded:
    report_id: str
    file_id: str
    md5: str


@dataclass(frozen=True)
class FileDescribed:
    report_id: str
    file_id: str


@dataclass(frozen=True)
class Finished:
    """The ESP's receipt: every file of the report."""

    report_id: str
    file_ids: list[str]


@dataclass(frozen=True)
class RetractionRequested:
    report_id: str
    post_finish: bool  # the report was finished: agencies that got it will be corrected


@dataclass(frozen=True)
class Added:
    """What a public reporter added to their report, on its way."""

    report_id: str


class RetractionView(BaseModel):
    """Once a report's retraction took effect: when, by whom and why, as the ESP's own steps
    say."""

    at: str
    by: str  # "esp" (its request), "system" (abandoned) or "tipline" (it asked for nothing)
    reason: str | None = None


class Entry(BaseModel):
    """A timeline entry as the ESP is told it: when, what, and the fields it may see of it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    at: str
    what: str


class ReportView(BaseModel):
    """What an ESP may see of its report (shared/audiences.py): its state, its status in
    NCMEC's words, its files, its retraction, and its timeline as it is told it."""

    model_config = ConfigDict(frozen=True)

    report_id: str
    state: DraftState
    status: EspStatus
    updated_at: str | None
    supersedes: str | None
    superseded_by: str | None
    files: list[FileInfo]
    retraction: RetractionView | None
    timeline: list[Entry]
    abandoned_after: str | None = None  # while open: when it is retracted if not finished
