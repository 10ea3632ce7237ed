"""A scripted ESP session over HTTP against the whole system (every service its own process).

status; submit; upload three files, one a duplicate; fileinfo for each; finish; the timeline shows
all of it and that the report was made available to law enforcement (never to whom: the ledger
says, for the operator); post-finish retract; every agency that got it is corrected, and the
ESP is told it was retracted. Then an unfinished report is abandoned by the timer and retracted
through the retraction service.
"""

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.notification.ledger import Ledger
from shared.store import connect
from tests.ispws_support import code, field, file_details, random_file, report_xml
from tipline.stack import Stack, running

pytestmark = pytest.mark.e2e
XML = {"content-type": "text/xml; charset=utf-8"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("esp-session")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TIPLINE_FILES_DIR", str(workdir / "files"))
        # Abandonment in seconds, so the test can watch it happen.
        env.setenv("TIPLINE_ABANDON_AFTER_OPEN_S", "6")
        env.setenv("TIPLINE_ABANDON_AFTER_CHANGE_S", "4")
        env.setenv("TIPLINE_ABANDON_TICK_S", "0.2")
        with running(workdir) as up:
            yield up


def esp_add(stack: Stack, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tipline.cli", "esp", "--redis", stack.redis, "add", name],
        env=stack.env(), capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    listed = subprocess.run(
        [sys.executable, "-m", "tipline.cli", "esp", "--redis", stack.redis, "list"],
        env=stack.env(), capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert name in listed
    password = next(line.split()[-1] for line in out.splitlines() if "password " in line)
    assert password not in listed
    return password


def wait_for(http: httpx.Client, report_id: str, done: Callable[[dict[str, Any]], bool],
             timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = http.get(f"/ispws/reports/{report_id}").json()
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def ledger_states(stack: Stack, report_id: str) -> dict[str, str]:
    """Where the report went and what each agency was sent, as the operator sees it: the
    notification ledger (its ESP is never told)."""
    async def read() -> dict[str, str]:
        redis = connect(stack.settings())
        try:
            return await Ledger(redis).states(report_id)
        finally:
            await redis.aclose()
    return asyncio.run(read())


def ledger_settled(stack: Stack, report_id: str, state: str) -> dict[str, str]:
    """The ledger once every agency the report went to is in `state` (30 s at most)."""
    deadline = time.monotonic() + 30
    while set((states := ledger_states(stack, report_id)).values()) != {state}:
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    return states


def whats(status: dict[str, Any]) -> list[str]:
    return [e["what"] for e in status["timeline"]]


def test_scripted_esp_session(stack: Stack) -> None:
    name = "esp-session"
    auth = (name, esp_add(stack, name))
    with httpx.Client(base_url=stack.http, auth=auth, timeout=30) as http:
        r = http.get("/ispws/status")
        assert (r.status_code, code(r.text)) == (200, 0)
        assert f"Remote User : {name}" in r.text

        r = http.post("/ispws/submit", content=report_xml(), headers=XML)
        assert (r.status_code, code(r.text)) == (200, 0), r.text
        report_id = field(r.text, "reportId")

        one, two = random_file(4096), random_file(8192)
        file_ids = []
        for content in (one, two, one):
            r = http.post("/ispws/upload", data={"id": report_id},
                          files={"file": ("synthetic.bin", content)})
            assert (r.status_code, code(r.text)) == (200, 0), r.text
            file_ids.append(field(r.text, "fileId"))
        for file_id in file_ids:
            r = http.post("/ispws/fileinfo", headers=XML, content=file_details(
                report_id, file_id, "<fileViewedByEsp>true</fileViewedByEsp>"))
            assert (r.status_code, code(r.text)) == (200, 0), r.text

        r = http.post("/ispws/finish", data={"id": report_id})
        assert r.status_code == 200 and "<reportDoneResponse>" in r.text
        assert all(f"<fileId>{f}</fileId>" in r.text for f in file_ids)

        steps = ["finished", "available to law enforcement"]
        status = wait_for(http, report_id, lambda s: set(steps) <= set(whats(s)))
        seen = whats(status)
        assert seen[:1] == ["opened"]
        assert seen.count("file uploaded") == 3 and seen.count("file described") == 3
        assert [w for w in seen if w in steps] == steps, seen  # in the order they happened
        assert status["status"] == "available_to_law_enforcement"
        files = {f["file_id"]: f for f in status["files"]}
        assert files[file_ids[2]]["duplicate_of"] == file_ids[0]
        # (referral marks the ledger once its send is acknowledged; intake tells the ESP
        # from its own reading of the facts: either may come first)
        referred = ledger_settled(stack, report_id, "referred")

        r = http.post("/ispws/retract", data={"id": report_id, "reason": "wrong account"})
        assert (r.status_code, code(r.text)) == (200, 0), r.text
        status = wait_for(http, report_id, lambda s: "retracted" in whats(s))
        assert status["state"] == "retracted" and status["status"] == "retracted"
        assert status["retraction"]["by"] == "esp"
        assert status["retraction"]["reason"] == "post-finish retraction: wrong account"
        # (intake records its own step once the broker took it: the retraction may be quicker)
        assert sorted(whats(status)[-2:]) == ["retracted", "retraction requested"]
        assert set(ledger_settled(stack, report_id, "corrected")) == set(referred)
        assert not any(agency in http.get(f"/ispws/reports/{report_id}").text
                       for agency in referred)


def test_an_unfinished_report_is_abandoned_through_the_retraction_path(stack: Stack) -> None:
    name = "esp-slow"
    auth = (name, esp_add(stack, name))
    with httpx.Client(base_url=stack.http, auth=auth, timeout=30) as http:
        report_id = field(http.post("/ispws/submit", content=report_xml(), headers=XML).text,
                          "reportId")
        # (intake records "abandoned" once the broker took the retraction: it may be second)
        status = wait_for(http, report_id, lambda s: {"abandoned", "retracted"} <= set(whats(s)),
                          timeout=20)
        assert "abandoned" in whats(status) and "retracted" in whats(status), whats(status)
        assert status["state"] == "abandoned"
        assert status["retraction"]["reason"] == "abandoned"
        assert status["retraction"]["by"] == "system"
        r = http.post("/ispws/finish", data={"id": report_id})
        assert (r.status_code, code(r.text)) == (409, 5103)


def test_stack_logs_carry_the_request_id(stack: Stack) -> None:
    with httpx.Client(base_url=stack.http, timeout=10) as http:
        rid = http.get("/ispws/status").headers["Request-ID"]
    intake = next(c for c in stack.children if c.name == "intake")
    assert intake.log is not None
    deadline = time.monotonic() + 5
    while rid not in Path(intake.log).read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rid in Path(intake.log).read_text()
