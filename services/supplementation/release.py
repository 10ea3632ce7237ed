"""Releasing a report for referral: route it once, then publish it on its priority's topic."""

from dataclasses import dataclass

from faststream.kafka import KafkaBroker

from services.supplementation.casefile import CaseFiles
from services.supplementation.jurisdiction import LiveRules, priority_of, resolve
from shared import topics
from shared.amendments import amended
from shared.contracts import Amendment, Priority, ReportSupplemented, derived_id
from shared.timeline import Fact, Timeline


def supplemented_topic(priority: Priority) -> str:
    """Urgent and bulk reports do not share a queue with each other (see docs/agencies.md)."""
    if priority >= Priority.HIGH:
        return topics.REPORTS_SUPPLEMENTED_URGENT
    if priority == Priority.BULK:
        return topics.REPORTS_SUPPLEMENTED_BULK
    return topics.REPORTS_SUPPLEMENTED


@dataclass
class Releaser:
    broker: KafkaBroker
    cases: CaseFiles
    timeline: Timeline
    rules: LiveRules

    async def release(self, report_id: str) -> ReportSupplemented:
        """Publish the report for referral (again, identically, if it was released before)."""
        case = await self.cases.get(report_id)
        if case is None or case.report is None:
            raise LookupError(f"report {report_id} has not been validated")
        changes = [Amendment.model_validate(a) for a in case.amendments]
        effective = amended(case.report, changes)  # route on what the analyst established
        rules = self.rules.rules()
        resolution = resolve(report_id, effective, rules)
        routing = await self.cases.route_once(report_id, {
            "agencies": resolution.agencies,
            "basis": resolution.basis,
            "rules_version": rules.version,
            "priority": priority_of(effective).name.lower(),
        })
        event = ReportSupplemented(
            event_id=derived_id(report_id, "supplemented"),
            report_id=report_id,
            esp_id=case.esp_id or "",
            report=case.report,
            agencies=routing["agencies"],
            priority=Priority[routing["priority"].upper()],
            jurisdiction=routing["basis"],
            rules_version=routing["rules_version"],
            supplements=case.supplements,
            amendments=case.amendments,
        )
        await self.timeline.record_all(report_id, [Fact(
            event.event_id, "supplemented", "supplemented", {
                "agencies": event.agencies,
                "jurisdiction": event.jurisdiction,
                "priority": routing["priority"],
                "rules_version": event.rules_version,
                "supplements": len(event.supplements),
                "amendments": len(event.amendments),
            },
        )], fields={"priority": routing["priority"]})
        await self.broker.publish(
            event, supplemented_topic(event.priority), key=report_id.encode()
        )
        return event
