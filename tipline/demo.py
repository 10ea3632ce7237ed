"""The demo: reports flow to agencies; retractions before and after referral; corrections arrive.

It acts as one ESP with a real login, over both front doors: whole reports on `/v1`, and reports
opened on `/ispws` and cancelled before they were finished (so never referred). A few referred
reports are retracted afterwards, and each of their agencies must get a correction. What it
expects comes from what it sent (`tipline.synthetic.expected_agencies`), never from what the
system did. Agencies follow their topics, verify every notice and acknowledge it with their own
registered key where the stack made one (`tipline up` does). Ends with a per-agency table, one
line of JSON, and where to see it all in the console.
"""

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from shared.agencies import load_agencies
from shared.audiences import Kind
from shared.contracts import AgencyNotice
from shared.settings import Settings
from shared.signing import SIGNING_FILE, Signer
from tipline.agency import AgencyClient
from tipline.oracle import corrected
from tipline.synthetic import expected_agencies, ispws_document, synthetic_report

ESP = "demo-esp"


@dataclass
class Expected:
    """What the demo sent, and so what each agency must get."""

    referrals: Counter[str] = field(default_factory=Counter)
    corrections: Counter[str] = field(default_factory=Counter)
    reports: dict[str, frozenset[str]] = field(default_factory=dict)  # report -> its agencies
    cancelled: set[str] = field(default_factory=set)  # retracted before finish: never referred


def agency_signer(workdir: Path | None, agency_id: str) -> Signer | None:
    """The agency's own key where the stack registered one (tipline/agencykeys.py)."""
    keys = workdir / "agency-keys" / agency_id if workdir else None
    return Signer(keys) if keys and (keys / SIGNING_FILE).exists() else None


async def _status(http: httpx.AsyncClient, report_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/reports/{report_id}")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def settled(status: dict[str, Any], corrected_there: bool) -> bool:
    """Nothing more will happen to this report on its own, as its ESP is told it, and, for one
    retracted after its referral, as its agencies see it (`corrected_there`: each agency that
    got its referral got its correction): the ESP is never told where a report went."""
    whats = {e["what"] for e in status["timeline"]}
    if status["status"] == "rejected":
        return True
    if status["retraction"]:
        if not {"finished", "submitted"} & whats:
            return True  # cancelled before it was finished: never referred
        return Kind.NOT_AVAILABLE in whats or (Kind.AVAILABLE in whats and corrected_there)
    return Kind.AVAILABLE in whats


async def _wait_settled(
    http: httpx.AsyncClient, ids: list[str], timeout: float, received: list[AgencyNotice],
    retracted: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    done: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for report_id in list(pending):
            status = await _status(http, report_id)
            # A report we retracted is settled only once its retraction has taken effect.
            done_there = corrected((n.agency_id, n.kind) for n in received
                                   if n.report_id == report_id)
            if settled(status, done_there) and (
                    report_id not in retracted or status["retraction"]):
                done[report_id] = status
                pending.discard(report_id)
        if pending:
            await asyncio.sleep(0.1)
    if pending:
        raise TimeoutError(f"{len(pending)} reports did not settle: {sorted(pending)[:5]}")
    return done


async def _send(http: httpx.AsyncClient, rng: random.Random, reports: int) -> Expected:
    expected = Expected()
    for i in range(reports):
        valid = i % 10 != 9
        report = synthetic_report(rng, valid=valid)
        if i % 8 == 3 and valid:  # opened on /ispws, then cancelled before it was finished
            opened = await http.post("/ispws/submit", json=ispws_document(report),
                                     headers={"Accept": "application/json"})
            opened.raise_for_status()
            report_id = str(opened.json()["reportResponse"]["reportId"])
            cancel = await http.post("/ispws/retract", data={"id": report_id,
                                                             "reason": "duplicate upload"})
            cancel.raise_for_status()
            expected.cancelled.add(report_id)
            continue
        response = await http.post("/v1/reports", json={"report": report})
        response.raise_for_status()
        report_id = response.json()["report_id"]
        expected.reports[report_id] = expected_agencies(report) if valid else frozenset()
        expected.referrals.update(expected.reports[report_id])
    return expected


async def run_demo(
    settings: Settings, base_url: str, login: tuple[str, str], *, workdir: Path | None = None,
    reports: int = 40, seed: int = 7, quiet: bool = False,
) -> dict[str, Any]:
    rng = random.Random(seed)
    agencies = load_agencies(settings.tipline_routing_file)
    received: list[AgencyNotice] = []
    group = f"demo-{time.time_ns()}"
    clients = [AgencyClient(settings, a, group_id=f"{group}-{a}", signer=agency_signer(workdir, a))
               for a in agencies]
    followers = [asyncio.create_task(c.collect(received)) for c in clients]
    say = (lambda *a: None) if quiet else print

    async with httpx.AsyncClient(base_url=base_url, timeout=30, auth=login) as http:
        expected = await _send(http, rng, reports)
        say(f"submitted {len(expected.reports)} reports on /v1; opened and cancelled "
            f"{len(expected.cancelled)} on /ispws")
        ids = [*expected.reports, *expected.cancelled]
        first = await _wait_settled(http, ids, timeout=120, received=received)
        referred = [i for i in expected.reports
                    if first[i]["status"] == "available_to_law_enforcement"]
        retract_late = referred[:: max(1, len(referred) // 6)][:6]
        for report_id in retract_late:
            (await http.post(f"/v1/reports/{report_id}/retract",
                             json={"reason": "reported in error"})).raise_for_status()
            expected.corrections.update(expected.reports[report_id])
        say(f"retracted {len(retract_late)} reports after their referral")
        await _wait_settled(http, retract_late, timeout=120, received=received,
                            retracted=frozenset(retract_late))

    await asyncio.sleep(1.0)  # let the followers read the last notices
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    return _tally(expected, received, list(agencies), say, len(retract_late))


def _tally(expected: Expected, received: list[AgencyNotice], agencies: list[str], say: Any,
           retracted_late: int) -> dict[str, Any]:
    ours = set(expected.reports) | expected.cancelled
    got: dict[str, Counter[str]] = {"referral": Counter(), "correction": Counter()}
    referred_to: set[tuple[str, str]] = set()
    stray = 0  # a notice nobody should have had: a cancelled report's, or the wrong agency's
    for notice in (n for n in received if n.report_id in ours and n.kind in got):
        pair = (notice.report_id, notice.agency_id)
        allowed = expected.reports.get(notice.report_id, frozenset())
        if notice.agency_id not in allowed or (
                notice.kind == "correction" and pair not in referred_to):
            stray += 1  # ... or a correction before its referral
            continue
        got[notice.kind][notice.agency_id] += 1
        referred_to.add(pair)

    say("\nagency                 referrals (expected)  corrections (expected)")
    for agency_id in sorted(agencies):
        say(f"{agency_id:<22} {got['referral'][agency_id]:>9} "
            f"({expected.referrals[agency_id]:>3})     {got['correction'][agency_id]:>11} "
            f"({expected.corrections[agency_id]:>3})")
    return {
        "reports": len(ours),
        "referrals_expected": sum(expected.referrals.values()),
        "referrals": sum(got["referral"].values()),
        "retracted": len(expected.cancelled) + retracted_late,
        "corrections_expected": sum(expected.corrections.values()),
        "corrections_delivered": sum(got["correction"].values()),
        "stray_notices": stray,
        "matches": got["referral"] == expected.referrals
        and got["correction"] == expected.corrections and stray == 0,
    }


def main(settings: Settings, base_url: str, login: tuple[str, str], reports: int, seed: int,
         workdir: Path | None = None, console: str | None = None, lasting: bool = True) -> int:
    """`lasting`: the stack (and its console) stays up after the demo (`tipline up`)."""
    result = asyncio.run(run_demo(settings, base_url, login, workdir=workdir, reports=reports,
                                  seed=seed))
    link = f"{console}/search?{urlencode({'esp': login[0]})}" if console else ""
    if link and lasting:
        print(f"\nsee them in the console: {link}")
    elif link:
        print(f"\nthe console served this demo at {console}/ and stops with it; to browse the "
              "reports, run `tipline up`, then `tipline demo --url <its intake URL>`: it ends "
              "with their console link")
    print(json.dumps(result))
    return 0 if result["matches"] and result["corrections_expected"] > 0 else 1
