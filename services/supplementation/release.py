"""Releasing a report for referral: route it once, then publish it on its priority's topic."""

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import JsonValue

from services.supplementation.casefile import Case, CaseFiles, Routing
from services.supplementation.jurisdiction import LiveRules, RoutingRules, priority_of, resolve
from shared import topics
from shared.amendments import amended
from shared.audiences import Kind
from shared.batches import Publisher
from shared.contracts import Amendment, Fact, Priority, Report, ReportSupplemented, derived_id
from shared.facts import Recorder


def supplemented_topic(priority: Priority) -> str:
    """Urgent and bulk reports do not share a queue with each other (see docs/agencies.md)."""
    if priority >= Priority.HIGH:
        return topics.REPORTS_SUPPLEMENTED_URGENT
    if priority == Priority.BULK:
        return topics.REPORTS_SUPPLEMENTED_BULK
    return topics.REPORTS_SUPPLEMENTED


@dataclass
class Releaser:
    publish: Publisher
    cases: CaseFiles
    timeline: Recorder
    rules: LiveRules

    async def release(self, report_ids: list[str]) -> list[ReportSupplemented]:
        """Publish these reports for referral (again, identically, if released before): a
        round trip to read their cases, then as `publish_cases`."""
        cases = await self.cases.get_many(report_ids, after_release=False)
        missing = [r for r, c in zip(report_ids, cases, strict=True) if c is None or not c.report]
        if missing:
            raise LookupError(f"reports {missing} have not been validated")
        return await self.publish_cases(
            {r: c for r, c in zip(report_ids, cases, strict=True) if c is not None})

    async def publish_cases(self, cases: dict[str, Case],
                            facts: Mapping[str, list[Fact]] | None = None
                            ) -> list[ReportSupplemented]:
        """Publish released cases for referral, each on its priority's topic, routed once (a
        round trip for those not routed yet), with their timeline facts (and `facts`)."""
        rules = self.rules.rules()
        unrouted = {r: routing_of(r, c.report, c.amendments, rules) for r, c in cases.items()
                    if c.routing is None and c.report is not None}
        routed = await self.cases.route_once(unrouted) if unrouted else {}
        events = [supplemented(r, c, c.routing or routed[r]) for r, c in cases.items()]
        told = {e.report_id: [Fact(
            e.event_id, Kind.SUPPLEMENTED, "supplemented", {
                "agencies": list[JsonValue](e.agencies), "jurisdiction": e.jurisdiction,
                "priority": e.priority.name.lower(), "rules_version": e.rules_version,
                "supplements": len(e.supplements), "amendments": len(e.amendments),
            })] for e in events}
        await self.timeline.record_many({**told, **(facts or {})})
        await self.publish.send((e, supplemented_topic(e.priority), e.report_id) for e in events)
        return events


def routing_of(report_id: str, report: Report, amendments: list[Amendment],
               rules: RoutingRules) -> Routing:
    """Where the report goes, decided on what the analyst established (amendments applied)."""
    effective = amended(report, amendments)
    resolution = resolve(report_id, effective, rules)
    return Routing(agencies=resolution.agencies, basis=resolution.basis,
                   rules_version=rules.version, priority=priority_of(effective).name.lower())


def supplemented(report_id: str, case: Case, routing: Routing) -> ReportSupplemented:
    assert case.report is not None
    return ReportSupplemented(
        event_id=derived_id(report_id, "supplemented"),
        report_id=report_id,
        esp_id=case.esp_id or "",
        report=case.report,
        agencies=routing.agencies,
        priority=routing.level,
        jurisdiction=routing.basis,
        rules_version=routing.rules_version,
        supplements=case.supplements,
        amendments=case.amendments,
        source=case.source,
    )
