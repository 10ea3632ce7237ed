"""The console in a real browser (headless Chromium from Debian, driven by Playwright) against
every service running as a separate process on the real broker and Valkey.

Reports go in through intake's ESP API and reach three agencies: two acknowledge when the test
says so, the third registered no key and never acknowledges. One report is retracted after its
referral. On the report's page, without a reload, each agency's correction shows as sent, then
acknowledged; on the silent agency's page it shows overdue, then escalated. Nothing is loaded
from anywhere but the console. An operator signs in and reads; the analyst API refuses their
writes. Screenshots go to the test's folder (and the overview and the retracted report's page
to /work/notes/ for the closing note).
"""

import asyncio
import contextlib
import random
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright
from redis.asyncio import Redis

from shared.analysts import AnalystDirectory
from shared.contracts import AgencyNotice
from shared.settings import Settings
from shared.signing import Signer
from tests.e2e.support import CHROMIUM, CHROMIUM_ARGS, console_system, until
from tests.integration.agency_helpers import agency_ids
from tipline.agency import AgencyClient
from tipline.esps import dev_logins
from tipline.stack import Stack
from tipline.synthetic import synthetic_report

pytestmark = pytest.mark.e2e
ACK_TIMEOUT_S, MAX_RESENDS = 8.0, 1
PASSWORD = "synthetic-console-password"
ESP = "console-e2e-esp"
NOTES = Path("/work/notes")


@pytest.fixture(scope="module")
def agencies() -> list[str]:
    return agency_ids(3)


@pytest.fixture(scope="module")
def system(servers: Stack, agencies: list[str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with console_system(servers, tmp_path_factory.mktemp("console"), agencies,
                        ack_timeout_s=ACK_TIMEOUT_S, max_resends=MAX_RESENDS) as stack:
        yield stack


@pytest.fixture
async def page(system: Stack) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(system.console)
                else outside.append(r.url))
        try:
            yield page
        finally:
            await browser.close()
        assert not outside, f"the console loaded something from elsewhere: {outside}"


async def sign_in(page: Page, console: str, analyst_id: str) -> None:
    await page.goto(f"{console}/")
    assert "/login" in page.url  # no session: the login first
    await page.fill("input[name=analyst_id]", analyst_id)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("main button")
    await page.wait_for_url(f"{console}/")


def correction(agency: str, state: str) -> str:
    return f'tr[data-agency="{agency}"] td.correction .badge[data-state="{state}"]'


async def test_every_correction_lands_in_the_console(
    system: Stack, settings: Settings, redis: Redis, agencies: list[str], page: Page,
    tmp_path: Path,
) -> None:
    console = system.console
    acking, silent = agencies[:2], agencies[2]
    directory = AnalystDirectory(redis)
    await directory.add("console-analyst", PASSWORD)
    await directory.add("console-operator", PASSWORD, role="operator")
    local = settings.model_copy(update={"tipline_keys_dir": system.workdir / "keys"})
    clients = {a: AgencyClient(local, a, auto_ack=False) for a in agencies}
    for agency in acking:
        clients[agency].signer = Signer(system.workdir / "agency-keys" / agency)
    got: dict[str, list[AgencyNotice]] = {a: [] for a in agencies}
    tasks = [asyncio.create_task(clients[a].collect(got[a])) for a in agencies]
    login = await dev_logins(system.settings(), [ESP], system.workdir)
    rng = random.Random(14)
    try:
        for client in clients.values():
            await client.ready()
        async with httpx.AsyncClient(base_url=system.http, auth=(ESP, login[ESP]),
                                     timeout=30) as esp:
            ids = []
            for _ in range(3):  # each routed to all three agencies (rule: TX)
                report = {**synthetic_report(rng), "location": {"country": "US",
                                                                "us_state": "TX"}}
                answer = await esp.post("/v1/reports", json={"report": report})
                assert answer.status_code in (200, 201, 202), answer.text
                ids.append(answer.json()["report_id"])
            target = ids[0]

            await sign_in(page, console, "console-analyst")
            await page.goto(f"{console}/reports/{target}")
            await page.evaluate("window.loadedOnce = 'yes'")  # gone if the page reloads
            for agency in agencies:  # the referral reaches each agency; the page follows
                await page.wait_for_selector(
                    f'tr[data-agency="{agency}"] td.referral .badge[data-state="sent"]',
                    timeout=60_000)
            for agency in acking:  # the acking agencies acknowledge their referral
                await until(lambda a=agency: any(n.report_id == target for n in got[a]),
                            f"{agency}'s referral", 60)
                await clients[agency].ack(next(n for n in got[agency]
                                               if n.report_id == target))
                await page.wait_for_selector(
                    f'tr[data-agency="{agency}"] td.referral '
                    f'.badge[data-state="acknowledged"]', timeout=30_000)
            await page.screenshot(path=tmp_path / "report-referred.png", full_page=True)

            retracted = await esp.post(f"/v1/reports/{target}/retract",
                                       json={"reason": "synthetic: reported in error"})
            assert retracted.status_code == 202, retracted.text

        # Sent, on every agency's row, as the page updates itself ...
        for agency in agencies:
            await page.wait_for_selector(correction(agency, "sent"), timeout=30_000)
        await page.screenshot(path=tmp_path / "report-corrections-sent.png", full_page=True)

        def corrections(agency: str) -> list[AgencyNotice]:
            return [n for n in got[agency] if n.report_id == target and n.kind == "correction"]

        await until(lambda: all(corrections(a) for a in acking), "corrections", 60)
        # ... then acknowledged, once each acking agency acknowledges it.
        for agency in acking:
            await clients[agency].ack(corrections(agency)[0])
            await page.wait_for_selector(correction(agency, "acknowledged"), timeout=30_000)
        assert await page.evaluate("window.loadedOnce") == "yes", "the page was reloaded"
        await page.screenshot(path=tmp_path / "report-acknowledged.png", full_page=True)

        # The agency that never acknowledges: overdue, then escalated, on its page.
        await page.goto(f"{console}/agencies/{silent}")
        await page.wait_for_selector("text=cannot acknowledge")
        pending = f'#unacknowledged tr[data-report="{target}"] .badge[data-state^="overdue"]'
        await page.wait_for_selector(pending, timeout=int(ACK_TIMEOUT_S * 1000) + 30_000)
        await page.screenshot(path=tmp_path / "agency-overdue.png", full_page=True)
        escalated = f'#escalated tr[data-report="{target}"] .badge[data-state^="escalated"]'
        await page.wait_for_selector(escalated, timeout=int(ACK_TIMEOUT_S * 1000) + 30_000)
        assert await page.locator(f'#unacknowledged tr[data-report="{target}"]').count() == 0
        await page.screenshot(path=tmp_path / "agency-escalated.png", full_page=True)

        # The whole story on the retracted report's page, and the overview.
        await page.goto(f"{console}/reports/{target}")
        await page.wait_for_selector(correction(silent, "escalated"))
        for agency in acking:
            assert await page.locator(correction(agency, "acknowledged")).count() == 1
        await page.screenshot(path=tmp_path / "report-retracted.png", full_page=True)
        await page.goto(f"{console}/")
        row = f'tr[data-agency="{silent}"] td[data-col="escalated"]'
        await page.wait_for_selector(f"{row}:has-text('1')")
        assert await page.locator("polyline.series").count() == 5
        await page.screenshot(path=tmp_path / "overview.png", full_page=True)
        await page.goto(f"{console}/search?esp={ESP}")
        assert await page.locator(f'tr[data-report="{target}"]').count() == 1

        # An operator reads the console; the analyst API refuses their writes.
        await page.click("button:has-text('log out')")
        await page.wait_for_url(f"{console}/login")
        await sign_in(page, console, "console-operator")
        await page.goto(f"{console}/reports/{target}")
        await page.wait_for_selector(correction(silent, "escalated"))
        async with httpx.AsyncClient(base_url=f"{system.analyst}/v1/analyst", timeout=10,
                                     auth=("console-operator", PASSWORD)) as operator:
            assert (await operator.get(f"/reports/{ids[1]}")).status_code == 200
            refused = await operator.post(f"/reports/{ids[1]}/retract",
                                          json={"reason": "synthetic"})
            assert refused.status_code == 403, refused.text
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(OSError):
        NOTES.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "overview.png", NOTES / "console-overview.png")
        shutil.copy(tmp_path / "report-retracted.png", NOTES / "console-report-retracted.png")
