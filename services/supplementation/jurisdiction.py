"""Jurisdiction and priority: pure functions of a report and the routing rules."""

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.agencies import Agency
from shared.contracts import Priority, Report

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Rules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    us_states: dict[str, list[str]] = Field(default_factory=dict)
    countries: dict[str, list[str]] = Field(default_factory=dict)
    cidrs: dict[IPNetwork, list[str]] = Field(default_factory=dict)
    incident_types: dict[str, list[str]] = Field(default_factory=dict)
    overrides: dict[str, list[str]] = Field(default_factory=dict)
    fallback: list[str] = Field(min_length=1)


class RoutingRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    agencies: list[Agency] = Field(min_length=1)
    rules: Rules

    @model_validator(mode="after")
    def _targets_are_known(self) -> "RoutingRules":
        known = {a.id for a in self.agencies}
        r = self.rules
        for section, mapping in (
            ("us_states", r.us_states),
            ("countries", r.countries),
            ("cidrs", r.cidrs),
            ("incident_types", r.incident_types),
            ("overrides", r.overrides),
            ("fallback", {"fallback": r.fallback}),
        ):
            for name, targets in mapping.items():
                unknown = sorted(set(targets) - known)
                if unknown:
                    raise ValueError(f"rules.{section}[{name}] names unknown agencies {unknown}")
        return self


def load_rules(path: Path) -> RoutingRules:
    return RoutingRules.model_validate(yaml.safe_load(path.read_text()))


@dataclass(frozen=True)
class Resolution:
    agencies: list[str]
    basis: str


def _ips(report: Report) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    candidates = [report.location.ip_address, *(u.ip_address for u in report.reported_users)]
    found = []
    for text in candidates:
        try:
            found.append(ipaddress.ip_address(text or ""))
        except ValueError:
            continue
    return found


def resolve(report_id: str, report: Report, routing: RoutingRules) -> Resolution:
    """The agencies that must receive this report: at least one, always."""
    rules = routing.rules
    if report_id in rules.overrides:
        return Resolution(sorted(rules.overrides[report_id]), "override")

    agencies: set[str] = set()
    basis: list[str] = []
    loc = report.location
    if loc.country in (None, "US") and loc.us_state in rules.us_states:
        agencies.update(rules.us_states[loc.us_state])
        basis.append(f"us_state={loc.us_state}")
    elif loc.country in rules.countries:
        agencies.update(rules.countries[loc.country])
        basis.append(f"country={loc.country}")
    else:
        for ip in _ips(report):
            matches = [n for n in rules.cidrs if ip.version == n.version and ip in n]
            if matches:
                best = max(matches, key=lambda n: n.prefixlen)
                agencies.update(rules.cidrs[best])
                basis.append(f"ip={best}")
                break
    if report.incident_type in rules.incident_types:
        agencies.update(rules.incident_types[report.incident_type])
        basis.append("incident_type")
    if not basis or basis == ["incident_type"]:
        agencies.update(rules.fallback)
        basis.append("fallback")
    return Resolution(sorted(agencies), ",".join(basis))


HIGH_PRIORITY_TYPES = frozenset(
    {"Child Sex Trafficking", "Online Enticement of Children for Sexual Acts"}
)


def priority_of(report: Report) -> Priority:
    if report.child_in_imminent_danger:
        return Priority.IMMINENT
    if report.escalate_to_high_priority or report.incident_type in HIGH_PRIORITY_TYPES:
        return Priority.HIGH
    if report.extra.get("batched"):
        return Priority.BULK
    return Priority.NORMAL
