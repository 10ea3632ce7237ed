"""A synthetic stream of ESP and analyst actions, one JSON object a line, reproducible by seed.

Each line is an action at `t` seconds from the start of the recording:

    {"t": 0.012, "seq": 0, "actor": "esp", "action": "submit", "ref": "r0", "esp_id": "esp-1",
     "api": "json", "report": {...}, "expect": "referred"}

Actions (`ref` names a report within the stream; replay maps it to the id tipline gives it):
- `submit`: a report through the JSON API; `expect` is "referred" or "rejected". A duplicate
  upload (the ESP sends the same report again) is a `submit` with `duplicate_of`.
- `retract`: the ESP retracts `ref`; `when` is "before_referral" (at once, usually before the
  pipeline refers it) or "after_referral" (once the referral reached its agencies).
- `open` with `abandoned: true`: a CyberTipline-style report opened on /ispws and never finished.
- `amend`: an analyst adds a supplement to a referred report.
Generated text only: no real people, content or hashes (file digests are random bytes).
"""

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from tipline.synthetic import synthetic_report

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
FUTURE = datetime(2999, 1, 1, tzinfo=UTC)  # an incident "in the future": always invalid

ACTIONS = ("submit", "retract", "open", "amend")


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of report in the stream (the rest are valid and left alone)."""

    invalid: float = 0.10
    duplicate: float = 0.05
    abandoned: float = 0.03
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


def events(
    reports: int, *, seed: int = 1, rate: float = 100.0, esps: int = 3, mix: Mix | None = None
) -> Iterator[dict[str, Any]]:
    """The stream for `reports` reports arriving at about `rate` a second (Poisson)."""
    mix = mix or Mix()
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
        if roll < (cut := cut + mix.abandoned):
            yield line(t, actor="esp", action="open", ref=ref, esp_id=esp, api="ispws",
                       abandoned=True, report=synthetic(rng))
            continue
        if roll < (cut := cut + mix.duplicate) and sent:
            original_ref, original, valid = rng.choice(sent[-50:])
            yield line(t, actor="esp", action="submit", ref=ref, esp_id=esp, api="json",
                       report=original, duplicate_of=original_ref,
                       expect="referred" if valid else "rejected")
            continue
        valid = roll >= (cut := cut + mix.invalid)
        report = synthetic(rng, valid=valid)
        if valid and rng.random() < 0.3:
            report["files"] = [{"file_id": f"f{n}-{i}", "sha256": _random_digest(rng),
                                "size": rng.randrange(1_000, 5_000_000)}
                               for i in range(rng.randrange(1, 4))]
        yield line(t, actor="esp", action="submit", ref=ref, esp_id=esp, api="json",
                   report=report, expect="referred" if valid else "rejected")
        sent.append((ref, report, valid))
        follow = rng.random()
        if follow < mix.retract_before:
            later.append((t + 0.001, {"actor": "esp", "action": "retract", "ref": ref,
                                      "esp_id": esp, "when": "before_referral",
                                      "reason": "duplicate upload"}))
        elif valid and follow < mix.retract_before + mix.retract_after:
            later.append((t + rng.uniform(0.5, 2.0), {
                "actor": "esp", "action": "retract", "ref": ref, "esp_id": esp,
                "when": "after_referral", "reason": "reported in error"}))
        elif valid and follow < mix.retract_before + mix.retract_after + mix.amend:
            later.append((t + rng.uniform(0.5, 2.0), {
                "actor": "analyst", "action": "amend", "ref": ref, "analyst": "analyst-1",
                "supplement": {"kind": "note", "text": f"synthetic analyst note {n}"}}))
        later.sort(key=lambda item: item[0])
    for at, fields in later:
        yield line(at, **fields)


def write(out: TextIO, stream: Iterator[dict[str, Any]]) -> int:
    count = 0
    for event in stream:
        out.write(json.dumps(event, separators=(",", ":")) + "\n")
        count += 1
    return count


def read(path: Path) -> list[dict[str, Any]]:
    """A stream file, checked line by line: a bad line names its number."""
    out = []
    with path.open() as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                event = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
            if event.get("action") not in ACTIONS or "ref" not in event or "t" not in event:
                raise ValueError(f"{path}:{number}: needs t, ref and an action in {ACTIONS}")
            out.append(event)
    return out
