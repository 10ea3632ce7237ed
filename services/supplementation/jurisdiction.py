"""Jurisdiction and priority: pure functions of a report and the routing rules.

Also how rules are read: validated at load (a bad file is refused with its line and reason) and
re-read when the file changes (`LiveRules`), the rules in force staying live until then.
"""

import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.agencies import Agency
from shared.contracts import Priority, Report

log = logging.getLogger("tipline.supplementation")

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


class RulesRefused(ValueError):
    """A routing file that cannot be used, with the line and the reason."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        super().__init__(f"{source}:{line or '?'}: {reason}")
        self.line = line
        self.reason = reason


_NAMED_TARGET = re.compile(r"rules\.(\w+)\[(.*?)\]")


def _line_of(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line of the YAML node at `loc` (as deep as it can be found)."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_rules(text: str, source: str = "routing") -> RoutingRules:
    """Rules from YAML text; RulesRefused names the line and the reason when they are bad."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RulesRefused(source, mark.line + 1 if mark else None, str(exc.problem)) from None
    if not isinstance(data, dict):
        raise RulesRefused(source, 1, "expected a mapping with version, agencies and rules")
    try:
        return RoutingRules.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if "[key]" in loc:  # a bad mapping key: name the key, not the validator's internals
            loc = loc[: loc.index("[key]")]
        if not loc and (named := _NAMED_TARGET.match(message)):
            loc = ("rules", named.group(1), named.group(2))
            message = message[named.end():].strip()
        where = ".".join(str(p) for p in loc)
        raise RulesRefused(
            source, _line_of(root, loc), f"{where}: {message}" if where else message
        ) from None


def load_rules(path: Path) -> RoutingRules:
    return parse_rules(path.read_text(), str(path))


class LiveRules:
    """The rules in force, re-read from their file when it changes, without a restart.

    A bad file is refused (logged with its line and reason) and the rules in force stay live.
    A changed file must carry a new version, so a version always names one set of rules.
    """

    def __init__(self, path: Path, check_every_s: float = 2.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self.current = load_rules(path)  # a bad file at start stops the service
        self._text = path.read_text()
        self._checked = time.monotonic()
        self.refused: str | None = None

    def rules(self) -> RoutingRules:
        if time.monotonic() - self._checked >= self.check_every_s:
            self.reload()
        return self.current

    def reload(self) -> bool:
        """Re-read the file; True when new rules went live."""
        self._checked = time.monotonic()
        try:
            text = self.path.read_text()
            if text == self._text:
                return False
            rules = parse_rules(text, str(self.path))
            if rules.version == self.current.version:
                raise RulesRefused(str(self.path), _line_of(yaml.compose(text), ("version",)),
                                   f"version: the rules changed but version is still "
                                   f"{rules.version!r}; give them a new version")
        except (OSError, RulesRefused) as exc:
            if str(exc) != self.refused:
                log.error("routing file refused, version %s stays live: %s",
                          self.current.version, exc)
            self.refused = str(exc)
            return False
        log.info("routing rules version %s live (was %s)", rules.version, self.current.version)
        self.current, self._text, self.refused = rules, text, None
        return True


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
