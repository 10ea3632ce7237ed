"""Synthetic reports: generated text only, never real people, content or hashes."""

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.rules import INCIDENT_TYPES

# Where a synthetic report happened; each resolves through deploy/config/routing.yaml.
PLACES: tuple[dict[str, Any], ...] = (
    {"country": "US", "us_state": "CA"},
    {"country": "US", "us_state": "TX"},
    {"country": "US", "us_state": "NY"},
    {"country": "US", "us_state": "FL"},
    {"country": "GB"},
    {"country": "CA"},
    {"country": "DE"},
    {"ip_address": "198.51.100.23"},
    {"country": "NZ"},
)


def synthetic_report(rng: random.Random, *, valid: bool = True) -> dict[str, Any]:
    n = rng.randrange(10**6)
    report: dict[str, Any] = {
        "incident_type": rng.choice(INCIDENT_TYPES),
        "incident_at": (datetime.now(UTC) - timedelta(hours=rng.randrange(1, 500))).isoformat(),
        "platform": rng.choice(["chat", "photos", "forum", "video"]),
        "reporter_email": f"trust-safety-{n}@esp.example",
        "reported_users": [
            {"screen_name": f"user{n}", "esp_identifier": f"acct-{n}", "ip_address": "192.0.2.7"}
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
