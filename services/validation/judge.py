"""A finished report's verdict: validated, or rejected with a reason for each field. Pure."""

from dataclasses import dataclass, field
from typing import Any

from shared import topics
from shared.audiences import Kind
from shared.contracts import (
    ReportRejected,
    ReportSubmitted,
    ReportValidated,
    derived_id,
)
from shared.rules import check_finished


@dataclass(frozen=True)
class Verdict:
    event: ReportValidated | ReportRejected
    topic: str
    what: Kind
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def report_id(self) -> str:
        return self.event.report_id

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def status(self) -> str:
        return self.what


def judge(event: ReportSubmitted) -> Verdict:
    """The same rules intake ran in part at the door (shared/rules.py), all of them now."""
    report_id = event.report_id
    errors = check_finished(event.report, at=event.occurred_at, source=event.source,
                            contact=event.contact)
    if errors:
        rejected = ReportRejected(event_id=derived_id(report_id, "rejected"), report_id=report_id,
                                  esp_id=event.esp_id, reasons=errors)
        return Verdict(rejected, topics.REPORTS_REJECTED, Kind.REJECTED,
                       {"reasons": [e.model_dump(exclude_none=True) for e in errors]})
    validated = ReportValidated(event_id=derived_id(report_id, "validated"), report_id=report_id,
                                esp_id=event.esp_id, report=event.report,
                                supersedes=event.supersedes, source=event.source,
                                contact=event.contact)
    return Verdict(validated, topics.REPORTS_VALIDATED, Kind.VALIDATED)
