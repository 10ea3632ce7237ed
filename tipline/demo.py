"""The demo: reports flow to agencies; retractions before and after referral; corrections arrive.

Ends with one line of JSON that says whether every correction owed was delivered.
"""

import asyncio
import json
import random
import time
from collections import defaultdict
from typing import Any

import httpx

from shared.agencies import load_agencies
from shared.contracts import AgencyNotice
from shared.settings import Settings
from tipline.agency import AgencyClient
from tipline.synthetic import synthetic_report

HEADERS = {"X-ESP-Id": "demo-esp"}


async def _status(http: httpx.AsyncClient, report_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/reports/{report_id}", headers=HEADERS)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def settled(status: dict[str, Any]) -> bool:
    """Nothing more will happen to this report on its own."""
    states = set(status["agencies"].values())
    whats = {e["what"] for e in status["timeline"]}
    if "rejected" in whats:
        return True
    if status["retraction"]:
        return "referral withheld" in whats or (bool(states) and states == {"corrected"})
    return bool(states) and "referring" not in states


async def _wait_settled(
    http: httpx.AsyncClient, ids: list[str], timeout: float, retracted: frozenset[str] = frozenset()
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    done: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for report_id in list(pending):
            status = await _status(http, report_id)
            # A report we retracted is settled only once its retraction has taken effect.
            if settled(status) and (report_id not in retracted or status["retraction"]):
                done[report_id] = status
                pending.discard(report_id)
        if pending:
            await asyncio.sleep(0.1)
    if pending:
        raise TimeoutError(f"{len(pending)} reports did not settle: {sorted(pending)[:5]}")
    return done


async def _follow(
    settings: Settings, agency_ids: list[str], group: str, into: list[AgencyNotice]
) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(
            AgencyClient(settings, a, group_id=f"{group}-{a}").collect(into)
        )
        for a in agency_ids
    ]


async def run_demo(
    settings: Settings, base_url: str, *, reports: int = 40, seed: int = 7, quiet: bool = False
) -> dict[str, int]:
    rng = random.Random(seed)
    agencies = load_agencies(settings.tipline_routing_file)
    received: list[AgencyNotice] = []
    followers = await _follow(settings, list(agencies), f"demo-{time.time_ns()}", received)
    say = (lambda *a: None) if quiet else print

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        ids: list[str] = []
        retract_early: list[str] = []
        for i in range(reports):
            body = {"report": synthetic_report(rng, valid=i % 10 != 9)}
            r = await http.post("/v1/reports", json=body, headers=HEADERS)
            r.raise_for_status()
            ids.append(r.json()["report_id"])
            if i % 8 == 3:  # retracted straight away, most likely before referral
                retract_early.append(ids[-1])
                await http.post(f"/v1/reports/{ids[-1]}/retract",
                                json={"reason": "duplicate upload"}, headers=HEADERS)
        say(f"submitted {len(ids)} reports; retracted {len(retract_early)} straight away")
        first = await _wait_settled(http, ids, timeout=120, retracted=frozenset(retract_early))

        referred = [i for i, s in first.items() if s["status"] == "referred"]
        retract_late = referred[:: max(1, len(referred) // 6)][:6]
        for report_id in retract_late:
            await http.post(f"/v1/reports/{report_id}/retract",
                            json={"reason": "reported in error"}, headers=HEADERS)
        say(f"retracted {len(retract_late)} reports after their referral")
        final = {**first, **await _wait_settled(http, retract_late, timeout=120,
                                                 retracted=frozenset(retract_late))}

    await asyncio.sleep(1.0)  # let the followers read the last notices
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)

    ours = set(ids)
    notices = [n for n in received if n.report_id in ours]
    retracted = {i for i, s in final.items() if s["retraction"]}
    referral_at: dict[tuple[str, str], int] = {}
    corrections_delivered = 0
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for position, n in enumerate(notices):
        table[n.agency_id][n.kind] += 1
        if n.kind == "referral":
            referral_at[(n.report_id, n.agency_id)] = position
        elif n.kind == "correction" and (n.report_id, n.agency_id) in referral_at:
            corrections_delivered += 1  # a correction counts only after its referral
    corrections_expected = sum(1 for (report_id, _) in referral_at if report_id in retracted)

    say("\nagency                 referrals  corrections")
    for agency_id in sorted(agencies):
        row = table[agency_id]
        say(f"{agency_id:<22} {row['referral']:>9}  {row['correction']:>11}")
    return {
        "reports": len(ids),
        "referrals": len(referral_at),
        "retracted": len(retracted),
        "corrections_expected": corrections_expected,
        "corrections_delivered": corrections_delivered,
    }


def main(settings: Settings, base_url: str, reports: int, seed: int) -> int:
    result = asyncio.run(run_demo(settings, base_url, reports=reports, seed=seed))
    print(json.dumps(result))
    ok = result["corrections_delivered"] == result["corrections_expected"] > 0
    return 0 if ok else 1
