"""The notices agencies receive, built and encoded. Pure: the flow (flow.py) sends them.

A notice id is derived from (kind, report, agency[, version]), so every redelivery of the same
notice carries the same id and the agency keeps one. A notice goes out signed (shared/signing.py)
when a signer is given; a re-send sends the very bytes first sent.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydantic import JsonValue

from services.notification.referrals import Retract
from shared.amendments import amended
from shared.audiences import Kind
from shared.contracts import (
    AgencyNotice,
    AmendmentPayload,
    Change,
    CorrectionPayload,
    Fact,
    FileInfo,
    LabelledSupplement,
    NoticeKind,
    Priority,
    ReferralPayload,
    ReferredFile,
    ReportSupplemented,
    Supplement,
    derived_id,
    now,
)
from shared.signing import Signer

TRACKED_KINDS = frozenset({"correction", "amendment"})  # awaiting their agency's ack


@dataclass(frozen=True)
class Encoded:
    """A notice and the bytes that go out for it (signed, when a signer was given)."""

    notice: AgencyNotice
    body: bytes


def notice_id(kind: NoticeKind, report_id: str, agency_id: str, *version: str) -> str:
    return derived_id("notice", kind, report_id, agency_id, *version)


def labelled(supplement: Supplement) -> LabelledSupplement:
    """A supplement as a notice carries it: unverified items say so in plain words."""
    return LabelledSupplement(**dict(supplement), label="verified" if supplement.verified
                              else "UNVERIFIED")


def _leaf(value: JsonValue) -> str | None:
    """The text of an ISPWS leaf as data (a string, or {"#text": ...} when it had attributes)."""
    if isinstance(value, dict):
        value = value.get("#text")
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else None


def referred_file(file: FileInfo) -> ReferredFile:
    """A file as an agency sees it first: whether a person at the ESP viewed it (None: the ESP
    did not say) and its industry classification, from the file's <fileDetails>."""
    viewed = _leaf(file.details.get("fileViewedByEsp"))
    return ReferredFile(
        file_id=file.file_id, sha256=file.sha256, md5=file.md5,
        original_name=file.original_name, relevance=file.relevance,
        fileViewedByEsp=None if viewed is None else viewed == "true",
        industryClassification=_leaf(file.details.get("industryClassification")))


def referral_notice(event: ReportSupplemented, agency_id: str) -> AgencyNotice:
    return AgencyNotice(
        kind="referral",
        notice_id=notice_id("referral", event.report_id, agency_id),
        report_id=event.report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=event.priority,
        payload=ReferralPayload(
            esp_id=event.esp_id if event.source == "esp" else None,
            source=event.source,  # a provider's report, or one from the public (triaged)
            report=event.report,  # the ESP's original; the analysts' changes sit beside it
            files=[referred_file(f) for f in event.report.files],
            jurisdiction=event.jurisdiction,
            rules_version=event.rules_version,
            supplements=[labelled(s) for s in event.supplements],
            amendments=event.amendments,
            amended_report=amended(event.report, event.amendments) if event.amendments
            else None),
    )


def correction_notice(
    report_id: str, agency_id: str, mark: Retract, priority: Priority
) -> AgencyNotice:
    return AgencyNotice(
        kind="correction",
        notice_id=notice_id("correction", report_id, agency_id),
        report_id=report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=priority,
        payload=CorrectionPayload(
            corrects_notice_id=notice_id("referral", report_id, agency_id),
            reason=mark.reason, requested_by=mark.by,
            retracted_at=datetime.fromisoformat(mark.at)),
    )


def amendment_notice(
    report_id: str, agency_id: str, version: int, change: Change, priority: Priority
) -> AgencyNotice:
    """Amendment `version` of a referred report: one changed field or one new supplement."""
    return AgencyNotice(
        kind="amendment",
        notice_id=notice_id("amendment", report_id, agency_id, str(version)),
        report_id=report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=priority,
        payload=AmendmentPayload(
            version=version,
            amends_notice_id=notice_id("referral", report_id, agency_id),
            supplement=labelled(change.supplement) if change.supplement else None,
            amendment=change.amendment),
    )


def signed(notice: AgencyNotice, signer: Signer) -> AgencyNotice:
    return AgencyNotice.model_validate_json(signer.sign_json(notice.model_dump(mode="json")))


def encoded(notice: AgencyNotice, signer: Signer | None) -> Encoded:
    """The notice as it goes out: signed when a signer is given."""
    if signer is None:
        return Encoded(notice, notice.model_dump_json().encode())
    return Encoded(notice, signer.sign_json(notice.model_dump(mode="json")))


DELIVERED = {"referral": Kind.REFERRAL_DELIVERED, "correction": Kind.CORRECTION_DELIVERED,
             "amendment": Kind.AMENDMENT_DELIVERED}


def delivered(sent: Iterable[AgencyNotice]) -> dict[str, list[Fact]]:
    """The timeline facts of notices sent, by report: each under its notice id (a repeat is one
    fact); a referral moves its report's status to referred."""
    facts: dict[str, list[Fact]] = {}
    for n in sent:
        detail: dict[str, JsonValue] = {"agency": n.agency_id}
        if n.kind == "referral":
            detail["priority"] = n.priority.name.lower()
        else:
            detail["notice_id"] = n.notice_id
        if n.payload.kind == "amendment":
            detail["version"] = n.payload.version
        facts.setdefault(n.report_id, []).append(Fact(
            n.notice_id, DELIVERED[n.kind], "referred" if n.kind == "referral" else None,
            detail))
    return facts


def summary(notice: AgencyNotice) -> dict[str, str]:
    """The fields of a notice that are safe to log (no report content)."""
    return {"kind": notice.kind, "notice_id": notice.notice_id, "report_id": notice.report_id,
            "agency_id": notice.agency_id}
