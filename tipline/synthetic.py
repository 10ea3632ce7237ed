"""Synthetic reports: generated text only, never real people, content or hashes."""

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.rules import INCIDENT_TYPES

# Where a synthetic report happened, and the agencies deploy/config/routing.yaml sends it to:
# written down here, from the rules' meaning, so a load tool checks the system against its own
# knowledge rather than the service's code (tests/unit/test_load_tools.py keeps the two agreed).
ROUTES: tuple[tuple[dict[str, Any], frozenset[str]], ...] = (
    ({"country": "US", "us_state": "CA"}, frozenset({"icac-ca"})),
    ({"country": "US", "us_state": "TX"}, frozenset({"icac-tx"})),
    ({"country": "US", "us_state": "NY"}, frozenset({"icac-ny"})),
    ({"country": "US", "us_state": "FL"}, frozenset({"icac-fl"})),
    ({"country": "GB"}, frozenset({"uk-nca"})),
    ({"country": "CA"}, frozenset({"ca-rcmp"})),
    ({"country": "DE"}, frozenset({"de-bka"})),
    ({"ip_address": "198.51.100.23"}, frozenset({"icac-tx"})),
    # No rule for NZ: the reported user's address (192.0.2.7, REPORTED_IP) decides.
    ({"country": "NZ"}, frozenset({"icac-ca"})),
)
PLACES: tuple[dict[str, Any], ...] = tuple(place for place, _ in ROUTES)
REPORTED_IP = "192.0.2.7"
FEDERAL = {"Child Sex Trafficking": "us-federal", "Child Sex Tourism": "us-federal"}


def routing_table() -> dict[str, Any]:
    """This knowledge as data, for a stream file's header: each place and its agencies, and the
    incident types the federal desk takes."""
    return {"places": [{"where": where, "agencies": sorted(agencies)}
                       for where, agencies in ROUTES],
            "federal": dict(FEDERAL)}


def agencies_in(table: dict[str, Any], report: dict[str, Any]) -> frozenset[str]:
    """Where a report must be referred by a routing table of `routing_table()`'s shape: its
    place's agencies, and the federal desk for the incident types it takes."""
    place = next((frozenset(p["agencies"]) for p in table["places"]
                  if p["where"] == report.get("location")), None)
    if place is None:
        raise ValueError(f"the routing table has no place {report.get('location')}")
    federal = table["federal"].get(report.get("incident_type") or "")
    return place | {federal} if federal else place


def expected_agencies(report: dict[str, Any]) -> frozenset[str]:
    """Where a synthetic report must be referred (see `agencies_in`)."""
    return agencies_in(routing_table(), report)


def ispws_document(report: dict[str, Any]) -> dict[str, Any]:
    """A synthetic report in the /ispws document's JSON spelling (what an unfinished report
    needs: its type, time and reporter)."""
    return {"report": {
        "incidentSummary": {"incidentType": report["incident_type"],
                            "incidentDateTime": report["incident_at"]},
        "reporter": {"reportingPerson": {"email": report["reporter_email"]}},
    }}


def synthetic_report(rng: random.Random, *, valid: bool = True) -> dict[str, Any]:
    n = rng.randrange(10**6)
    report: dict[str, Any] = {
        "incident_type": rng.choice(INCIDENT_TYPES),
        "incident_at": (datetime.now(UTC) - timedelta(hours=rng.randrange(1, 500))).isoformat(),
        "platform": rng.choice(["chat", "photos", "forum", "video"]),
        "reporter_email": f"trust-safety-{n}@esp.example",
        "reported_users": [
            {"screen_name": f"user{n}", "esp_identifier": f"acct-{n}",
             "ip_address": REPORTED_IP}
        ],
        "location": rng.choice(PLACES),
        "additional_info": f"synthetic report {n}",
    }
    if not valid:
        broken = rng.choice(["incident_type", "incident_at", "reporter_email"])
        if broken == "incident_at":
            report[broken] = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        else:
            report.pop(broken)
    return report
