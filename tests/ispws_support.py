"""Synthetic /ispws documents and helpers shared by the ispws tests (no real data anywhere)."""

import os
import re
from datetime import UTC, datetime, timedelta

INCIDENT = "Child Sex Trafficking"


def report_xml(*, email: str = "safety@esp.example", when: datetime | None = None,
               extra_summary: str = "", tail: str = "", batched: bool = False) -> bytes:
    when = when or datetime.now(UTC) - timedelta(days=2)
    batch = '<batchedReport reason="VIRAL_POTENTIAL_MEME"/>' if batched else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<report>
  {batch}
  <incidentSummary>
    <incidentType>{INCIDENT}</incidentType>
    {extra_summary}
    <incidentDateTime>{when.isoformat()}</incidentDateTime>
  </incidentSummary>
  <reporter>
    <reportingPerson><email>{email}</email></reportingPerson>
  </reporter>
  {tail}
</report>""".encode()


def file_details(report_id: str, file_id: str, body: str = "") -> bytes:
    return (f"<fileDetails><reportId>{report_id}</reportId><fileId>{file_id}</fileId>"
            f"{body}</fileDetails>").encode()


def random_file(size: int = 2048) -> bytes:
    return os.urandom(size)


def field(xml: str, name: str) -> str:
    found = re.search(rf"<{name}>([^<]*)</{name}>", xml)
    assert found, f"no <{name}> in {xml}"
    return found.group(1)


def code(xml: str) -> int:
    return int(field(xml, "responseCode"))
