"""Building and sending the notices agencies receive. Builders are pure; `send` is the one way out.

A notice id is derived from (kind, report, agency[, version]), so every redelivery of the same
notice carries the same id and the agency keeps one. Every notice is signed (shared/signing.py)
when a signer is given, and corrections and amendments are tracked until the agency acknowledges
them (services/notification/outbox.py) when an outbox is given.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.notification.ledger import Ledger
from services.notification.outbox import Outbox
from shared.amendments import amended
from shared.audiences import Kind
from shared.batches import Item, Publisher
from shared.contracts import (
    AgencyNotice,
    Change,
    Fact,
    NoticeKind,
    Priority,
    ReportSupplemented,
    Supplement,
    derived_id,
    now,
)
from shared.facts import Recorder
from shared.signing import Signer
from shared.topics import agency_topic

TRACKED_KINDS = frozenset({"correction", "amendment"})


@dataclass(frozen=True)
class Dispatch:
    """How notices leave a service: signed by `signer`, tracked until acked by `outbox`."""

    signer: Signer | None = None
    outbox: Outbox | None = None


UNSIGNED = Dispatch()


def notice_id(kind: NoticeKind, report_id: str, agency_id: str, *version: str) -> str:
    return derived_id("notice", kind, report_id, agency_id, *version)


def labelled(supplement: Supplement) -> dict[str, Any]:
    """A supplement as a notice carries it: unverified items say so in plain words."""
    return {**supplement.model_dump(mode="json"),
            "label": "verified" if supplement.verified else "UNVERIFIED"}


def referral_notice(event: ReportSupplemented, agency_id: str) -> AgencyNotice:
    payload: dict[str, Any] = {
        "esp_id": event.esp_id if event.source == "esp" else None,
        "source": event.source,  # a provider's report, or one from the public (analyst-triaged)
        "report": event.report.model_dump(mode="json"),
        "jurisdiction": event.jurisdiction,
        "rules_version": event.rules_version,
        "supplements": [labelled(s) for s in event.supplements],
    }
    if event.amendments:
        # The ESP's original stays in "report"; the analyst's changes sit beside it.
        payload["amendments"] = [a.model_dump(mode="json") for a in event.amendments]
        payload["amended_report"] = amended(event.report, event.amendments).model_dump(
            mode="json")
    return AgencyNotice(
        kind="referral",
        notice_id=notice_id("referral", event.report_id, agency_id),
        report_id=event.report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=event.priority,
        payload=payload,
    )


def correction_notice(
    report_id: str, agency_id: str, retraction: dict[str, str], priority: Priority
) -> AgencyNotice:
    return AgencyNotice(
        kind="correction",
        notice_id=notice_id("correction", report_id, agency_id),
        report_id=report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=priority,
        payload={
            "action": "retracted",
            "corrects_notice_id": notice_id("referral", report_id, agency_id),
            "reason": retraction.get("reason", ""),
            "requested_by": retraction.get("by", ""),
            "retracted_at": retraction.get("at", ""),
        },
    )


def amendment_notice(
    report_id: str, agency_id: str, version: int, change: Change, priority: Priority
) -> AgencyNotice:
    """Amendment `version` of a referred report: one changed field or one new supplement."""
    payload: dict[str, Any] = {
        "version": version,
        "amends_notice_id": notice_id("referral", report_id, agency_id),
    }
    if change.supplement is not None:
        payload["supplement"] = labelled(change.supplement)
    elif change.amendment is not None:
        payload["amendment"] = change.amendment.model_dump(mode="json")
    return AgencyNotice(
        kind="amendment",
        notice_id=notice_id("amendment", report_id, agency_id, str(version)),
        report_id=report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=priority,
        payload=payload,
    )


def signed(notice: AgencyNotice, signer: Signer) -> AgencyNotice:
    return AgencyNotice.model_validate_json(signer.sign_json(notice.model_dump(mode="json")))


def encoded(notice: AgencyNotice, signer: Signer | None) -> bytes:
    """The notice as it goes out: signed when a signer is given."""
    if signer is None:
        return notice.model_dump_json().encode()
    return signer.sign_json(notice.model_dump(mode="json"))


async def send(
    publish: Publisher, notices: Iterable[AgencyNotice], dispatch: Dispatch = UNSIGNED,
    then: Iterable[Item] = (),
) -> list[AgencyNotice]:
    """Sign, track, then publish notices keyed by report id, and the records `then` after
    them, all in flight together; returns the notices (as built: their signed bodies went out)
    once the broker acknowledged every one."""
    out = [(n, encoded(n, dispatch.signer)) for n in notices]
    if dispatch.outbox is not None:
        # Tracked before the first send: if this process dies now, the re-send loop sends it.
        await dispatch.outbox.track(*((n, body) for n, body in out if n.kind in TRACKED_KINDS))
    await publish.send([*((body, agency_topic(n.agency_id), n.report_id) for n, body in out),
                        *then])
    return [n for n, _ in out]


async def send_corrections(
    publish: Publisher,
    ledger: Ledger,
    timeline: Recorder,
    owed: Mapping[str, tuple[list[str], Priority]],
    dispatch: Dispatch = UNSIGNED,
    marks: Mapping[str, dict[str, str] | None] | None = None,
) -> None:
    """Correct each agency that got the referral of a retracted report (report id -> the
    agencies owed and the report's priority), and record it. `marks`: each report's retraction
    mark, when the caller read it already (else it is read from the ledger)."""
    owed = {r: (agencies, priority) for r, (agencies, priority) in owed.items() if agencies}
    if not owed:
        return
    if marks is None:
        marks = await ledger.retractions(list(owed))
    notices = [correction_notice(r, a, marks[r] or {}, priority)
               for r, (agencies, priority) in owed.items() for a in agencies]
    # The facts go in the notices' own send, after them (as a referral's): a send that fails is
    # made again whole, so a fact never outlives a correction not delivered.
    await timeline.record_many(_facts(notices, Kind.CORRECTION_DELIVERED))
    await send(publish, notices, dispatch)
    # Recorded once delivered: a correction not confirmed is only sent again (by notice id).
    await publish.once_delivered(lambda: ledger.confirm_corrections(
        {r: agencies for r, (agencies, _) in owed.items()}))


async def send_amendments(
    publish: Publisher,
    timeline: Recorder,
    owed: Mapping[str, tuple[list[str], list[tuple[int, str]], Priority]],
    dispatch: Dispatch = UNSIGNED,
) -> None:
    """Send amendments (report id -> agencies whose referral was delivered, the (version, JSON
    change) pairs, the priority), then record them."""
    notices = [
        amendment_notice(report_id, agency, version, Change.model_validate_json(change),
                         priority)
        for report_id, (agencies, changes, priority) in owed.items()
        for agency in agencies
        for version, change in changes
    ]
    if notices:
        await send(publish, notices, dispatch)
        await timeline.record_many(_facts(notices, what=Kind.AMENDMENT_DELIVERED))


def _facts(notices: list[AgencyNotice], what: Kind) -> dict[str, list[Fact]]:
    """The timeline facts of delivered notices."""
    facts: dict[str, list[Fact]] = {}
    for n in notices:
        detail: dict[str, Any] = {"agency": n.agency_id, "notice_id": n.notice_id}
        if "version" in n.payload:
            detail["version"] = n.payload["version"]
        facts.setdefault(n.report_id, []).append(Fact(n.notice_id, what, detail=detail))
    return facts


def summary(notice: AgencyNotice) -> dict[str, Any]:
    """The fields of a notice that are safe to log (no report content)."""
    return {"kind": notice.kind, "notice_id": notice.notice_id, "report_id": notice.report_id,
            "agency_id": notice.agency_id}
