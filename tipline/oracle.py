"""The chaos oracle: what agencies got, against what the stream said must come of it. Pure.

What must come of each report is the generator's own knowledge, written in the stream file
(`expect` and `agencies` of each action, tipline/generate.py); nothing here asks the system what
it decided. What came is every distinct notice seen on the agency topics (a redelivery with the
same notice_id is one notice; a second notice with another id is a second notice).

Per report, with A its `agencies` (empty for an invalid, abandoned or withheld report):
- valid: one referral at each agency of A, one amendment for each amend action, no correction;
- retracted after referral: one referral and then one correction at each agency of A;
- retracted before referral: at each agency of A, nothing, or one referral and then one
  correction (the retraction may reach the pipeline after the referral: then it is corrected);
- invalid, abandoned, withheld: no notice anywhere.

Four counters, each a number of notices:
- lost: a notice owed that never came, including all those of a report tipline never accepted
  (at least one for a valid, abandoned or withheld report that got no report id);
- duplicated: a second notice of one kind for one (report, agency), whatever its id (amendments:
  more than the amend actions);
- misrouted: a notice no agency should have had: to an agency outside A, of a report that must
  reach none, or a correction of a report never retracted;
- out_of_order: a correction or amendment before its referral at that agency (by offset in the
  partition, the report id being the key), or with no referral there at all.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("referral", "correction", "amendment")
COUNTERS = ("lost", "duplicated", "misrouted", "out_of_order")
EXAMPLES = 10  # kept per counter


@dataclass(frozen=True)
class Notice:
    """One distinct notice as an agency saw it."""

    agency: str
    kind: str
    report_id: str
    notice_id: str
    partition: int = 0
    offset: int = 0
    arrived: float = 0.0  # monotonic seconds

    def before(self, other: "Notice") -> bool:
        if self.partition == other.partition:
            return self.offset < other.offset
        return self.arrived < other.arrived


@dataclass
class Expected:
    """What must come of one report of the stream."""

    ref: str
    outcome: str  # "valid", "invalid", "abandoned" or "withheld"
    agencies: frozenset[str]
    retracted: str | None = None  # "before_referral" or "after_referral"
    amendments: int = 0

    @property
    def label(self) -> str:
        if self.outcome != "valid":
            return self.outcome
        if self.retracted:
            return f"retracted {self.retracted.replace('_', ' ')}"
        return "amended" if self.amendments else "referred"


def expectations(actions: Iterable[Mapping[str, Any]]) -> dict[str, Expected]:
    """Each report's expectation, from the stream's actions (in stream order)."""
    out: dict[str, Expected] = {}
    for action in actions:
        ref, kind = action["ref"], action["action"]
        if kind in ("submit", "open"):
            out[ref] = Expected(ref, action["expect"], frozenset(action.get("agencies", ())))
            continue
        expected = out.get(ref)
        if expected is None:
            raise ValueError(f"{kind} of {ref} before its report")
        if kind == "retract" and action.get("api") != "ispws":
            expected.retracted = action.get("when", "before_referral")
        elif kind == "amend":
            expected.amendments += 1
    return out


@dataclass
class Verdict:
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    outcomes: Counter[str] = field(default_factory=Counter)
    unattributed: int = 0  # notices of report ids the replay was never given

    def add(self, counter: str, n: int, example: str) -> None:
        if n <= 0:
            return
        self.counts[counter] += n
        if len(self.examples[counter]) < EXAMPLES:
            self.examples[counter].append(example)

    @property
    def clean(self) -> bool:
        return not any(self.counts[c] for c in COUNTERS)

    def as_dict(self) -> dict[str, Any]:
        return {**{c: self.counts[c] for c in COUNTERS},
                "examples": {c: self.examples[c] for c in COUNTERS if self.examples[c]},
                "outcomes": dict(self.outcomes), "unattributed": self.unattributed}


def corrected(seen: Iterable[tuple[str, str]]) -> bool:
    """Of one report's notices, as (agency, kind): some agency got its referral, and every
    agency that got one got its correction too. (Where a report went, and whether it was
    corrected there, the agencies see; its ESP is never told.)"""
    kinds: dict[str, set[str]] = defaultdict(set)
    for agency, kind in seen:
        kinds[agency].add(kind)
    referred = [k for k in kinds.values() if "referral" in k]
    return bool(referred) and all("correction" in k for k in referred)


def owed(expected: Expected) -> int:
    """How many notices a report owes at the least (what is lost if it was never accepted)."""
    if expected.outcome != "valid":
        return 1  # nothing to notify, but the report itself was lost
    per_agency = (0 if expected.retracted == "before_referral"
                  else 1 + (expected.retracted == "after_referral") + expected.amendments)
    return max(1, per_agency * len(expected.agencies))


def judge_report(
    verdict: Verdict, expected: Expected, report_id: str | None, got: Iterable[Notice]
) -> None:
    """Add one report's counts to `verdict`."""
    who = f"{expected.ref} ({expected.label})"
    if report_id is None:
        verdict.outcomes["never accepted" if expected.outcome != "invalid"
                         else "invalid, refused at intake"] += 1
        if expected.outcome != "invalid":
            verdict.add("lost", owed(expected), f"{who}: never accepted")
        return
    verdict.outcomes[expected.label] += 1
    by_agency: dict[str, dict[str, list[Notice]]] = defaultdict(lambda: defaultdict(list))
    for notice in got:
        by_agency[notice.agency][notice.kind].append(notice)
    allowed = expected.agencies if expected.outcome == "valid" else frozenset()
    for agency, kinds in by_agency.items():
        if agency not in allowed:
            n = sum(len(v) for v in kinds.values())
            verdict.add("misrouted", n, f"{who} report {report_id}: {n} notice(s) to {agency}")
    for agency in sorted(allowed):
        _judge_agency(verdict, expected, f"{who} report {report_id} at {agency}",
                      by_agency.get(agency, {}))


def _judge_agency(verdict: Verdict, expected: Expected, where: str,
                  kinds: Mapping[str, list[Notice]]) -> None:
    referrals = sorted(kinds.get("referral", []), key=lambda n: (n.partition, n.offset))
    corrections = kinds.get("correction", [])
    amendments = kinds.get("amendment", [])
    want_referral = 1 if expected.retracted != "before_referral" or referrals else 0
    verdict.add("lost", want_referral - len(referrals), f"{where}: referral missing")
    verdict.add("duplicated", len(referrals) - 1, f"{where}: {len(referrals)} referrals")
    if expected.retracted:
        want = 1 if expected.retracted == "after_referral" or referrals else 0
        verdict.add("lost", want - len(corrections), f"{where}: correction missing")
        verdict.add("duplicated", len(corrections) - 1, f"{where}: {len(corrections)} corrections")
    else:
        verdict.add("misrouted", len(corrections), f"{where}: a correction, never retracted")
    verdict.add("lost", expected.amendments - len(amendments),
                f"{where}: {expected.amendments - len(amendments)} amendment(s) missing")
    verdict.add("duplicated", len(amendments) - expected.amendments,
                f"{where}: {len(amendments)} amendments for {expected.amendments}")
    first = referrals[0] if referrals else None
    for notice in [*corrections, *amendments]:
        if first is None:
            verdict.add("out_of_order", 1, f"{where}: {notice.kind} with no referral")
        elif notice.before(first):
            verdict.add("out_of_order", 1, f"{where}: {notice.kind} before the referral")


def judge(
    expected: Mapping[str, Expected], accepted: Mapping[str, str | None],
    notices: Iterable[Notice],
) -> Verdict:
    """The verdict over every report of the stream. `accepted` maps a ref to the report id
    tipline answered (None or absent: never accepted); a notice seen again (the same notice_id:
    a redelivery) counts once, as an agency dedupes it."""
    by_report: dict[str, list[Notice]] = defaultdict(list)
    seen: set[str] = set()
    for notice in notices:
        if notice.notice_id not in seen:
            seen.add(notice.notice_id)
            by_report[notice.report_id].append(notice)
    verdict = Verdict()
    for ref, exp in expected.items():
        report_id = accepted.get(ref)
        judge_report(verdict, exp, report_id, by_report.pop(report_id, []) if report_id else [])
    verdict.unattributed = sum(len(v) for v in by_report.values())
    return verdict


def render(verdict: Verdict) -> str:
    lines = [f"oracle                lost {verdict.counts['lost']}, duplicated "
             f"{verdict.counts['duplicated']}, misrouted {verdict.counts['misrouted']}, "
             f"out of order {verdict.counts['out_of_order']}  (unattributed notices "
             f"{verdict.unattributed})"]
    for counter in COUNTERS:
        for example in verdict.examples[counter]:
            lines.append(f"  {counter:<12} {example}")
    return "\n".join(lines)
