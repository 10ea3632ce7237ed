"""A synthetic stream of ESP and analyst actions, one JSON object a line, reproducible by seed.

The first line is the header (version 2): the generator's own routing table, from which every
action's `agencies` was worked out (tipline.synthetic, written from the rules' meaning, never from
the services' code):

    {"stream": "tipline", "version": 2, "seed": 7, "routing": {"places": [...], "federal": {...}}}

Then each line is an action at `t` seconds from the start of the recording, with what must come
of it (`expect`) and which agencies that concerns (`agencies`):

    {"t": 0.012, "seq": 0, "actor": "esp", "action": "submit", "ref": "r0", "esp_id": "esp-1",
     "api": "json", "report": {...}, "expect": "valid", "agencies": ["icac-ca"]}

Actions (`ref` names a report within the stream; replay maps it to the id tipline gives it):
- `submit` (/v1): `expect` is "valid" (referred to `agencies`) or "invalid" (no notice at all;
  `agencies` is empty). A duplicate upload (the ESP sends the same report again) carries
  `duplicate_of`, and is a report of its own.
- `retract` (/v1): `when` is "before_referral" (at once: never referred, or corrected wherever
  referred) or "after_referral" (once the referral reached its agencies: each gets a correction
  after it); `expect` is "retracted_before_referral" or "retracted_after_referral".
- `amend` (analyst API): once the referral reached its agencies, an analyst amends the report;
  `expect` "amended": each of `agencies` gets an amendment notice after the referral.
- `open` (/ispws): a report opened and never finished; `expect` is "abandoned" (intake
  auto-retracts it after the abandonment deadline) or "withheld" (the ESP cancels it, a
  `retract` with `api` "ispws" and `when` "before_finish"). Neither may reach any agency.
Generated text only: no real people, content or hashes (file digests are random bytes).
"""

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from tipline.synthetic import agencies_in, routing_table, synthetic_report

VERSION = 2
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
FUTURE = datetime(2999, 1, 1, tzinfo=UTC)  # an incident "in the future": always invalid

ACTIONS = ("submit", "retract", "open", "amend")
EXPECT = {
    "submit": ("valid", "invalid"),
    "retract": ("retracted_before_referral", "retracted_after_referral", "withheld"),
    "amend": ("amended",),
    "open": ("abandoned", "withheld"),
}


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of report in the stream (the rest are valid and left alone)."""

    invalid: float = 0.10
    duplicate: float = 0.05
    abandoned: float = 0.03
    withheld: float = 0.02
    retract_before: float = 0.06
    retract_after: float = 0.06
    amend: float = 0.05


def synthetic(rng: random.Random, valid: bool = True) -> dict[str, Any]:
    """A synthetic report whose times depend on the seed only (not on today's date)."""
    report = synthetic_report(rng, valid=valid)
    if "incident_at" in report:
        future = datetime.fromisoformat(report["incident_at"]) > datetime.now(UTC)
        report["incident_at"] = (FUTURE if future else EPOCH - timedelta(
            hours=rng.randrange(1, 500))).isoformat()
    return report


def _random_digest(rng: random.Random) -> str:
    return rng.randbytes(32).hex()  # random bytes, never the digest of any real file


def header(seed: int) -> dict[str, Any]:
    return {"stream": "tipline", "version": VERSION, "seed": seed, "routing": routing_table()}


def events(
    reports: int, *, seed: int = 1, rate: float = 100.0, esps: int = 3, mix: Mix | None = None
) -> Iterator[dict[str, Any]]:
    """The actions for `reports` reports arriving at about `rate` a second (Poisson)."""
    mix = mix or Mix()
    table = routing_table()
    rng = random.Random(seed)
    t = 0.0
    seq = 0
    later: list[tuple[float, dict[str, Any]]] = []  # follow-ups, due at their own time

    def line(at: float, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {"t": round(at, 4), "seq": seq - 1, **fields}

    sent: list[tuple[str, dict[str, Any], bool]] = []
    for n in range(reports):
        t += rng.expovariate(rate)
        while later and later[0][0] <= t:
            at, fields = later.pop(0)
            yield line(at, **fields)
        ref = f"r{n}"
        esp = f"esp-{rng.randrange(esps) + 1}"
        roll = rng.random()
        cut = 0.0
        if roll < (cut := cut + mix.abandoned + mix.withheld):
            withheld = roll >= mix.abandoned
            outcome = "withheld" if withheld else "abandoned"
            yield line(t, actor="esp", action="open", ref=ref, esp_id=esp, api="ispws",
                       report=synthetic(rng), expect=outcome, agencies=[])
            if withheld:
                later.append((t + rng.uniform(0.05, 0.5), {
                    "actor": "esp", "action": "retract", "ref": ref, "esp_id": esp,
                    "api": "ispws", "when": "before_finish", "reason": "sent in error",
                    "expect": "withheld", "agencies": []}))
                later.sort(key=lambda item: item[0])
            continue
        if roll < (cut := cut + mix.duplicate) and sent:
            original_ref, original, valid = rng.choice(sent[-50:])
            yield line(t, actor="esp", action="submit", ref=ref, esp_id=esp, api="json",
                       report=original, duplicate_of=original_ref,
                       expect="valid" if valid else "invalid",
                       agencies=sorted(agencies_in(table, original)) if valid else [])
            continue
        valid = roll >= (cut := cut + mix.invalid)
        report = synthetic(rng, valid=valid)
        if valid and rng.random() < 0.3:
            report["files"] = [{"file_id": f"f{n}-{i}", "sha256": _random_digest(rng),
                                "size": rng.randrange(1_000, 5_000_000)}
                               for i in range(rng.randrange(1, 4))]
        agencies = sorted(agencies_in(table, report)) if valid else []
        yield line(t, actor="esp", action="submit", ref=ref, esp_id=esp, api="json",
                   report=report, expect="valid" if valid else "invalid", agencies=agencies)
        sent.append((ref, report, valid))
        follow = rng.random()
        if follow < mix.retract_before:
            later.append((t + 0.001, {"actor": "esp", "action": "retract", "ref": ref,
                                      "esp_id": esp, "when": "before_referral",
                                      "reason": "duplicate upload",
                                      "expect": "retracted_before_referral",
                                      "agencies": agencies}))
        elif valid and follow < mix.retract_before + mix.retract_after:
            later.append((t + rng.uniform(0.5, 2.0), {
                "actor": "esp", "action": "retract", "ref": ref, "esp_id": esp,
                "when": "after_referral", "reason": "reported in error",
                "expect": "retracted_after_referral", "agencies": agencies}))
        elif valid and follow < mix.retract_before + mix.retract_after + mix.amend:
            later.append((t + rng.uniform(0.5, 2.0), {
                "actor": "analyst", "action": "amend", "ref": ref,
                "amendment": {"path": "additional_info", "value": f"synthetic amended note {n}",
                              "reason": f"synthetic amendment {n}"},
                "expect": "amended", "agencies": agencies}))
        later.sort(key=lambda item: item[0])
    for at, fields in later:
        yield line(at, **fields)


def write(out: TextIO, stream: Iterator[dict[str, Any]], seed: int) -> int:
    """The header, then the actions; returns how many actions."""
    out.write(json.dumps(header(seed), separators=(",", ":")) + "\n")
    count = 0
    for event in stream:
        out.write(json.dumps(event, separators=(",", ":")) + "\n")
        count += 1
    return count


def check(event: dict[str, Any], table: dict[str, Any]) -> str | None:
    """What is wrong with one action of a version 2 stream (None: nothing)."""
    action = event.get("action")
    if action not in ACTIONS or "ref" not in event or "t" not in event:
        return f"needs t, ref and an action in {ACTIONS}"
    if event.get("expect") not in EXPECT[action] or not isinstance(event.get("agencies"), list):
        return f"a {action} needs expect (one of {EXPECT[action]}) and agencies"
    if action == "submit" and event["expect"] == "valid":
        try:
            owed = agencies_in(table, event["report"])
        except (ValueError, KeyError, TypeError) as exc:
            return f"no agencies for this report in the header's routing table: {exc}"
        if sorted(owed) != sorted(event["agencies"]):
            return (f"agencies {event['agencies']} disagree with the header's routing table "
                    f"({sorted(owed)})")
    return None


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A stream file's header and actions, checked line by line: a bad line names its number."""
    head: dict[str, Any] | None = None
    out = []
    with path.open() as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                event = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
            if head is None:
                if event.get("stream") != "tipline" or event.get("version") != VERSION:
                    raise ValueError(
                        f"{path}:{number}: not a version {VERSION} stream (no header with "
                        f"its routing table and expectations): make it again with "
                        f"`tipline generate`")
                head = event
                continue
            if problem := check(event, head["routing"]):
                raise ValueError(f"{path}:{number}: {problem}")
            out.append(event)
    if head is None:
        raise ValueError(f"{path}: empty stream")
    return head, out
