"""Jurisdiction rules: every report resolves to a known agency, rules are checked at load with
the line and the reason, reload without restart, and a report is routed once."""

import ipaddress
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.supplementation.casefile import Case, Routing
from services.supplementation.jurisdiction import (
    LiveRules,
    RoutingRules,
    RulesRefused,
    load_rules,
    parse_rules,
    priority_of,
    resolve,
)
from services.supplementation.release import Releaser, supplemented_topic
from shared.contracts import Location, Priority, Report, ReportedUser
from shared.settings import CONFIG_DIR
from shared.topics import REPORTS_SUPPLEMENTED_BULK, REPORTS_SUPPLEMENTED_URGENT

T = TypeVar("T")
SHIPPED = load_rules(CONFIG_DIR / "routing.yaml")
AGENCY_POOL = [f"agency-{i}" for i in range(6)]
STATES = ["CA", "TX", "NY", "FL", "WA"]
COUNTRIES = ["US", "GB", "CA", "DE", "FR", "BR"]
TYPES = ["Child Sex Trafficking", "Child Sex Tourism", "Online Enticement of Children for "
         "Sexual Acts", "Misleading Domain Name"]

targets = st.lists(st.sampled_from(AGENCY_POOL), min_size=1, max_size=3, unique=True)
networks = st.one_of(
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.ip_addresses(v=4), st.integers(8, 32)),
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.ip_addresses(v=6), st.integers(16, 128)),
)


@st.composite
def routing_rules(draw: Any, version: str = "v") -> RoutingRules:
    return RoutingRules.model_validate({
        "version": draw(st.text("abc123.", min_size=1, max_size=8)) if version == "v" else version,
        "agencies": [{"id": a, "name": a} for a in AGENCY_POOL],
        "rules": {
            "us_states": draw(st.dictionaries(st.sampled_from(STATES), targets, max_size=4)),
            "countries": draw(st.dictionaries(st.sampled_from(COUNTRIES), targets, max_size=4)),
            "cidrs": {str(n): t for n, t in
                      draw(st.dictionaries(networks, targets, max_size=4)).items()},
            "incident_types": draw(st.dictionaries(st.sampled_from(TYPES), targets, max_size=2)),
            "overrides": draw(st.dictionaries(st.sampled_from(["1", "2", "3"]), targets,
                                              max_size=2)),
            "fallback": draw(targets),
        },
    })


maybe_text = st.one_of(st.none(), st.text(max_size=6))
reports = st.builds(
    Report,
    incident_type=st.one_of(st.none(), st.sampled_from(TYPES), st.text(max_size=10)),
    child_in_imminent_danger=st.booleans(),
    escalate_to_high_priority=maybe_text,
    location=st.builds(
        Location,
        country=st.one_of(st.none(), st.sampled_from(COUNTRIES), st.text(max_size=3)),
        us_state=st.one_of(st.none(), st.sampled_from(STATES), st.text(max_size=3)),
        ip_address=st.one_of(maybe_text, st.ip_addresses().map(str)),
    ),
    reported_users=st.lists(
        st.builds(ReportedUser, ip_address=st.one_of(maybe_text, st.ip_addresses().map(str))),
        max_size=2,
    ),
)
report_ids = st.sampled_from(["1", "2", "3", "4", "r-77"])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=routing_rules(), report=reports, report_id=report_ids)
def test_every_report_resolves_to_at_least_one_known_agency(
    rules: RoutingRules, report: Report, report_id: str
) -> None:
    resolution = resolve(report_id, report, rules)
    known = {a.id for a in rules.agencies}
    assert resolution.agencies, resolution
    assert set(resolution.agencies) <= known
    assert resolution.basis


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(report=reports, report_id=report_ids)
def test_the_shipped_rules_resolve_every_report(report: Report, report_id: str) -> None:
    assert resolve(report_id, report, SHIPPED).agencies


class FakeCases:
    """The case file's routing memory, in a dict (the real one is tested against Redis)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.routing: Routing | None = None

    async def get_many(self, report_ids: list[str], **_: Any) -> list[Any]:
        return [Case("released", "esp", self.report, [], [], self.routing) for _ in report_ids]

    async def route_once(self, routings: dict[str, Routing]) -> dict[str, Routing]:
        (report_id, routing), = routings.items()
        self.routing = self.routing or routing
        return {report_id: self.routing}


class Recorder:
    """Stands in for the publisher and the timeline."""

    def __init__(self) -> None:
        self.published: list[Any] = []

    async def send(self, items: Any) -> None:
        self.published.extend(event for event, _, _ in items)

    async def record_many(self, *args: Any, **kwargs: Any) -> None:
        return None


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (its ports are fakes) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine waited on something")


class FixedRules:
    def __init__(self, rules: RoutingRules) -> None:
        self.current = rules

    def rules(self) -> RoutingRules:
        return self.current


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=routing_rules(), second=routing_rules(), report=reports, report_id=report_ids)
def test_a_change_of_rules_never_reroutes_a_released_report(
    first: RoutingRules, second: RoutingRules, report: Report, report_id: str
) -> None:
    recorder, rules = Recorder(), FixedRules(first)
    releaser = Releaser(recorder, FakeCases(report), recorder, rules)  # type: ignore[arg-type]
    (before,) = drive(releaser.release([report_id]))
    rules.current = second  # new rules go live, then the report is redelivered
    (after,) = drive(releaser.release([report_id]))
    assert after.agencies == before.agencies == resolve(report_id, report, first).agencies
    assert after.rules_version == first.version


def test_priority_classes_have_their_own_topics() -> None:
    assert priority_of(Report(child_in_imminent_danger=True)) == Priority.IMMINENT
    assert supplemented_topic(Priority.IMMINENT) == REPORTS_SUPPLEMENTED_URGENT
    assert supplemented_topic(Priority.HIGH) == REPORTS_SUPPLEMENTED_URGENT
    assert supplemented_topic(Priority.BULK) == REPORTS_SUPPLEMENTED_BULK


GOOD = """\
version: "v1"
agencies:
  - {id: a, name: A}
  - {id: b, name: B}
rules:
  countries:
    GB: [a]
  cidrs:
    "192.0.2.0/24": [b]
  fallback: [a]
"""


@pytest.mark.parametrize("change,line,reason", [
    (("GB: [a]", "GB: [zzz]"), 7, "rules.countries.GB: names unknown agencies ['zzz']"),
    (('"192.0.2.0/24"', '"192.0.2.0/33"'), 9, "rules.cidrs.192.0.2.0/33: Input is not a valid"),
    (("  countries:", "  contries:"), 6, "rules.contries: Extra inputs are not permitted"),
    (("fallback: [a]", "fallback: []"), 10, "rules.fallback: List should have at least 1 item"),
    (("GB: [a]", "GB: [a"), 8, "expected ',' or ']'"),
    (('version: "v1"\n', ""), 1, "version: Field required"),
])
def test_a_bad_file_is_refused_with_line_and_reason(
    change: tuple[str, str], line: int, reason: str
) -> None:
    with pytest.raises(RulesRefused) as refused:
        parse_rules(GOOD.replace(*change), "routing.yaml")
    assert refused.value.line == line, refused.value
    assert refused.value.reason.startswith(reason), refused.value


def test_rules_reload_without_restart_and_bad_files_leave_the_old_rules_live(
    tmp_path: Path,
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(GOOD)
    live = LiveRules(path, check_every_s=0)
    gb = Report(location=Location(country="GB"))
    assert resolve("x", gb, live.rules()).agencies == ["a"]

    path.write_text(GOOD.replace("GB: [a]", "GB: [nobody]").replace("v1", "v2"))
    assert resolve("x", gb, live.rules()).agencies == ["a"]  # refused: v1 stays live
    assert live.refused and ":7: " in live.refused

    path.write_text(GOOD.replace("GB: [a]", "GB: [b]"))
    assert live.rules().version == "v1"  # changed rules under the same version are refused
    assert live.refused and "new version" in live.refused

    path.write_text(GOOD.replace("GB: [a]", "GB: [b]").replace("v1", "v2"))
    assert live.rules().version == "v2" and live.refused is None
    assert resolve("x", gb, live.rules()).agencies == ["b"]
