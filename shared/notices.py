"""Building and sending the notices agencies receive. Builders are pure; `send` is the one way out.

A notice id is derived from (kind, report, agency[, version]), so every redelivery of the same
notice carries the same id and the agency keeps one. Every notice is signed (shared/signing.py)
when a signer is given, and corrections and amendments are tracked until the agency acknowledges
them (shared/acks.py) when an outbox is given.
"""

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from faststream.kafka import KafkaBroker

from shared.acks import Outbox
from shared.amendments import amended
from shared.contracts import (
    AgencyNotice,
    Amendment,
    NoticeKind,
    Priority,
    ReportSupplemented,
    derived_id,
    now,
)
from shared.ledger import Ledger
from shared.signing import Signer
from shared.timeline import Fact, Timeline
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


def labelled(supplement: dict[str, Any]) -> dict[str, Any]:
    """A supplement as a notice carries it: unverified items say so in plain words."""
    return {**supplement, "label": "verified" if supplement.get("verified") else "UNVERIFIED"}


def referral_notice(event: ReportSupplemented, agency_id: str) -> AgencyNotice:
    payload: dict[str, Any] = {
        "esp_id": event.esp_id,
        "report": event.report.model_dump(mode="json"),
        "jurisdiction": event.jurisdiction,
        "rules_version": event.rules_version,
        "supplements": [labelled(s) for s in event.supplements],
    }
    if event.amendments:
        # The ESP's original stays in "report"; the analyst's changes sit beside it.
        changes = [Amendment.model_validate(a) for a in event.amendments]
        payload["amendments"] = event.amendments
        payload["amended_report"] = amended(event.report, changes).model_dump(mode="json")
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
    report_id: str, agency_id: str, version: int, change: dict[str, Any], priority: Priority
) -> AgencyNotice:
    """Amendment `version` of a referred report: one changed field or one new supplement."""
    payload: dict[str, Any] = {
        "version": version,
        "amends_notice_id": notice_id("referral", report_id, agency_id),
    }
    if "supplement" in change:
        payload["supplement"] = labelled(change["supplement"])
    else:
        payload["amendment"] = change["amendment"]
    return AgencyNotice(
        kind="amendment",
        notice_id=notice_id("amendment", report_id, agency_id, str(version)),
        report_id=report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=priority,
        payload=payload,
    )


def signed(notice: AgencyNotice, signer: Signer | None) -> AgencyNotice:
    if signer is None:
        return notice
    return AgencyNotice.model_validate(signer.sign(notice.model_dump(mode="json")))


async def send(
    broker: KafkaBroker, notices: Iterable[AgencyNotice], dispatch: Dispatch = UNSIGNED
) -> list[AgencyNotice]:
    """Sign, track, then publish notices keyed by report id; wait for the broker's acks."""
    out = [signed(n, dispatch.signer) for n in notices]
    if dispatch.outbox is not None:
        # Tracked before the first send: if this process dies now, the re-send loop sends it.
        await dispatch.outbox.track(*(n for n in out if n.kind in TRACKED_KINDS))
    await asyncio.gather(
        *(broker.publish(n, agency_topic(n.agency_id), key=n.report_id.encode()) for n in out)
    )
    return out


async def send_corrections(
    broker: KafkaBroker,
    ledger: Ledger,
    timeline: Timeline,
    report_id: str,
    agencies: list[str],
    priority: Priority = Priority.NORMAL,
    dispatch: Dispatch = UNSIGNED,
) -> None:
    """Correct each agency that got the referral of a retracted report, then record it."""
    if not agencies:
        return
    retraction = await ledger.retraction(report_id) or {}
    notices = [correction_notice(report_id, a, retraction, priority) for a in agencies]
    await send(broker, notices, dispatch)
    await ledger.confirm_corrections(report_id, agencies)
    await timeline.record_all(report_id, [
        Fact(n.notice_id, "correction delivered",
             detail={"agency": n.agency_id, "notice_id": n.notice_id})
        for n in notices
    ])


async def send_amendments(
    broker: KafkaBroker,
    timeline: Timeline,
    report_id: str,
    agencies: list[str],
    changes: list[tuple[int, str]],
    priority: Priority = Priority.NORMAL,
    dispatch: Dispatch = UNSIGNED,
) -> None:
    """Send amendments (version, JSON change) to agencies whose referral was delivered."""
    notices = [
        amendment_notice(report_id, agency, version, json.loads(change), priority)
        for agency in agencies
        for version, change in changes
    ]
    if not notices:
        return
    await send(broker, notices, dispatch)
    await timeline.record_all(report_id, [
        Fact(n.notice_id, "amendment delivered",
             detail={"agency": n.agency_id, "notice_id": n.notice_id,
                     "version": n.payload["version"]})
        for n in notices
    ])


def summary(notice: AgencyNotice) -> dict[str, Any]:
    """The fields of a notice that are safe to log (no report content)."""
    return {"kind": notice.kind, "notice_id": notice.notice_id, "report_id": notice.report_id,
            "agency_id": notice.agency_id}
