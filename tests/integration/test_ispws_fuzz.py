"""Property-based fuzz of the /ispws OpenAPI (schemathesis): whatever arrives, never a 5xx.

Intake runs as its own process on the real broker and Redis; every operation gets a bounded number
of generated requests, with good credentials, with none, and against a report that exists.
"""

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Err, Ok

from services.intake.esps import EspRegistry
from shared.settings import Settings as TiplineSettings
from shared.store import connect
from tests.ispws_support import field, report_xml
from tipline.stack import Stack, free_port, start_services

# A longer run: TIPLINE_FUZZ_EXAMPLES=500 (CI keeps the default).
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi-intake.json"
EXAMPLES = int(os.environ.get("TIPLINE_FUZZ_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def intake(servers: Stack, settings: TiplineSettings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("fuzz")
    stack = Stack(kafka=servers.kafka, redis=servers.redis,
                  http=f"http://127.0.0.1:{free_port()}", workdir=workdir)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TIPLINE_FILES_DIR", str(workdir / "files"))
        env.setenv("TIPLINE_MAX_UPLOAD_BYTES", "65536")
        start_services(stack, ("intake",))
    try:
        yield stack.http
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def login(settings: TiplineSettings) -> tuple[str, str]:
    async def add() -> tuple[str, str]:
        redis = connect(settings)
        name = f"fuzz-{uuid.uuid4().hex[:8]}"
        password = await EspRegistry(redis).add(name)
        await redis.aclose()
        return name, password

    return asyncio.run(add())


@pytest.fixture(scope="module")
def open_report(intake: str, login: tuple[str, str]) -> str:
    r = httpx.post(f"{intake}/ispws/submit", content=report_xml(), auth=login,
                   headers={"content-type": "text/xml"})
    return field(r.text, "reportId")


def test_no_input_makes_a_server_error(
    intake: str, login: tuple[str, str], open_report: str
) -> None:
    # The document intake is built from (docs/, checked against the code by tests/deploy): the
    # ESP port does not serve it.
    schema = schemathesis.openapi.from_path(str(OPENAPI)).include(path_regex="^/(ispws|v1)/")
    token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    calls = 0

    def check(case: schemathesis.Case) -> None:
        nonlocal calls
        # Aim some calls at a real open report, so the fuzz gets past "does not exist".
        if isinstance(case.body, dict) and case.body.get("id") == "0":
            case.body["id"] = open_report
        for headers in ({"Authorization": f"Basic {token}"}, {}):
            response = case.call(base_url=intake, headers=headers, timeout=30)
            calls += 1
            assert response.status_code < 500, (
                case.method, case.path, response.status_code, response.text[:500])
            assert "request-id" in {k.lower() for k in response.headers}

    read = list(schema.get_all_operations())
    assert not [each.err() for each in read if isinstance(each, Err)]  # the schema reads whole
    operations = [each.ok() for each in read if isinstance(each, Ok)]
    assert len(operations) >= 8
    for operation in operations:
        # Both what the schema allows and what it forbids (negative cases).
        strategy = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)
        fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))(given(strategy)(check))
        fuzz()
    print(f"\n{calls} fuzzed calls over {len(operations)} operations, no 5xx")


def test_the_esp_port_serves_the_esp_apis_only(intake: str) -> None:
    paths = json.loads(OPENAPI.read_text())["paths"]
    for route in ("status", "xsd", "submit", "upload", "fileinfo", "finish", "retract",
                  "reports/{report_id}"):
        assert f"/ispws/{route}" in paths
    assert "/v1/reports" in paths
    for internal in ("/openapi.json", "/docs", "/redoc", "/metrics", "/healthz", "/readyz"):
        assert httpx.get(f"{intake}{internal}").status_code == 404, internal
