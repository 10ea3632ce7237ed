"""Building and sending the notices agencies receive. Builders are pure; `send` is the one way out.

A notice id is derived from (kind, report, agency[, version]), so every redelivery of the same
notice carries the same id and the agency keeps one.
"""

import asyncio
from collections.abc import Iterable
from typing import Any

from faststream.kafka import KafkaBroker

from shared.contracts import AgencyNotice, NoticeKind, Priority, ReportSupplemented, derived_id, now
from shared.ledger import Ledger
from shared.timeline import Timeline
from shared.topics import agency_topic


def notice_id(kind: NoticeKind, report_id: str, agency_id: str, *version: str) -> str:
    return derived_id("notice", kind, report_id, agency_id, *version)


def referral_notice(event: ReportSupplemented, agency_id: str) -> AgencyNotice:
    return AgencyNotice(
        kind="referral",
        notice_id=notice_id("referral", event.report_id, agency_id),
        report_id=event.report_id,
        agency_id=agency_id,
        issued_at=now(),
        priority=event.priority,
        payload={
            "esp_id": event.esp_id,
            "report": event.report.model_dump(mode="json"),
            "jurisdiction": event.jurisdiction,
            "rules_version": event.rules_version,
            "supplements": event.supplements,
        },
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


async def send(broker: KafkaBroker, notices: Iterable[AgencyNotice]) -> None:
    """Publish notices keyed by report id and wait until the broker acknowledged every one."""
    await asyncio.gather(
        *(
            broker.publish(n, agency_topic(n.agency_id), key=n.report_id.encode())
            for n in notices
        )
    )


async def send_corrections(
    broker: KafkaBroker,
    ledger: Ledger,
    timeline: Timeline,
    report_id: str,
    agencies: list[str],
    priority: Priority = Priority.NORMAL,
) -> None:
    """Correct each agency that got the referral of a retracted report, then record it."""
    if not agencies:
        return
    retraction = await ledger.retraction(report_id) or {}
    notices = [correction_notice(report_id, a, retraction, priority) for a in agencies]
    await send(broker, notices)
    for notice in notices:
        await ledger.confirm_correction(report_id, notice.agency_id)
        await timeline.record(
            report_id,
            notice.notice_id,
            "correction delivered",
            agency=notice.agency_id,
            notice_id=notice.notice_id,
        )


def summary(notice: AgencyNotice) -> dict[str, Any]:
    """The fields of a notice that are safe to log (no report content)."""
    return {"kind": notice.kind, "notice_id": notice.notice_id, "report_id": notice.report_id,
            "agency_id": notice.agency_id}
