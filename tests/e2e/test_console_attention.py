"""The console tells you when something is stuck: headless Chromium from Debian, driven by
Playwright, against every service as a separate process on the real broker and Valkey.

Three agencies receive every report: `acking` acknowledges with its registered key, `wrong`
signs its acks with a key it never registered (the retraction service refuses them), `silent`
registered no key and never acknowledges. Shown without a reload: `wrong` in "needs attention"
and on its page with the cause; a correction to `silent` overdue, then escalated, in the queue;
focus, selection and scroll kept across live updates; filters that round-trip through the URL;
no page wider than 390 px at 390 px, and every text at WCAG AA contrast; a console stopped shows
"offline" within 5 s. Screenshots go to the test's folder (and three to /work/notes).
"""

import asyncio
import contextlib
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.async_api import Page, async_playwright
from redis.asyncio import Redis

from shared.analysts import AnalystDirectory
from shared.contracts import AgencyNotice
from shared.settings import Settings
from shared.signing import Signer
from tests.e2e.support import CHROMIUM, CHROMIUM_ARGS, console_system, until
from tests.integration.agency_helpers import agency_ids, agency_key
from tipline.agency import AgencyClient
from tipline.esps import dev_logins
from tipline.stack import Stack, free_port, wait_for_port
from tipline.synthetic import synthetic_report

pytestmark = pytest.mark.e2e
ACK_TIMEOUT_S, MAX_RESENDS = 6.0, 1
PASSWORD = "synthetic-console-password"
ANALYST = "attention-analyst"
ESP = "attention-e2e-esp"
NOTES = Path("/work/notes")


class Agencies:
    """The three agencies' clients and what each received."""

    def __init__(self, settings: Settings, workdir: Path, ids: list[str]) -> None:
        self.acking, self.wrong, self.silent = ids
        self.clients = {a: AgencyClient(settings, a, auto_ack=False) for a in ids}
        self.clients[self.acking].signer = Signer(workdir / "agency-keys" / self.acking)
        agency_key(workdir / "impostor-keys")  # a key `wrong` never registered
        self.clients[self.wrong].signer = Signer(workdir / "impostor-keys")
        self.got: dict[str, list[AgencyNotice]] = {a: [] for a in ids}

    async def notice(self, agency: str, report_id: str, kind: str) -> AgencyNotice:
        def found() -> AgencyNotice | None:
            return next((n for n in self.got[agency]
                         if n.report_id == report_id and n.kind == kind), None)

        notice = await until(found, f"{agency}'s {kind} of {report_id}", 60)
        assert isinstance(notice, AgencyNotice)
        return notice


@pytest.fixture(scope="module")
def system(servers: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ids = agency_ids(3)
    with console_system(servers, tmp_path_factory.mktemp("attention"), ids,
                        ack_timeout_s=ACK_TIMEOUT_S, max_resends=MAX_RESENDS) as stack:
        stack.agency_ids = ids  # type: ignore[attr-defined]
        yield stack


@pytest.fixture(scope="module")
async def agencies(system: Stack, settings: Settings) -> AsyncIterator[Agencies]:
    local = settings.model_copy(update={"tipline_keys_dir": system.workdir / "keys"})
    found = Agencies(local, system.workdir, system.agency_ids)  # type: ignore[attr-defined]
    tasks = [asyncio.create_task(c.collect(found.got[a])) for a, c in found.clients.items()]
    for client in found.clients.values():
        await client.ready()
    redis = Redis.from_url(settings.redis_url)
    await AnalystDirectory(redis).add(ANALYST, PASSWORD)
    await redis.aclose()
    yield found
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module")
async def esp(system: Stack) -> AsyncIterator[httpx.AsyncClient]:
    login = await dev_logins(system.settings(), [ESP], system.workdir)
    async with httpx.AsyncClient(base_url=system.http, auth=(ESP, login[ESP]),
                                 timeout=30) as client:
        yield client


async def submit(esp: httpx.AsyncClient, seed: int) -> str:
    """A synthetic report routed to all three agencies (rule: TX)."""
    report = {**synthetic_report(random.Random(seed)),
              "location": {"country": "US", "us_state": "TX"}}
    answer = await esp.post("/v1/reports", json={"report": report})
    assert answer.status_code in (200, 201, 202), answer.text
    return str(answer.json()["report_id"])


@pytest.fixture
async def browser_page(system: Stack) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        try:
            yield page
        finally:
            await browser.close()


async def sign_in(page: Page, console: str, then: str = "/") -> None:
    await page.goto(f"{console}{then}")
    assert "/login" in page.url  # no session: the login first
    await page.fill("input[name=analyst_id]", ANALYST)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("main button")
    await page.wait_for_url(f"{console}{then}")


def row(kind: str, agency: str, report: str | None = None) -> str:
    found = f'#attention tr[data-kind="{kind}"][data-agency="{agency}"]'
    return found + (f':has(a[href="/reports/{report}"])' if report else "")


async def test_refused_acks_show_in_needs_attention_and_on_the_agency_page(
    system: Stack, agencies: Agencies, esp: httpx.AsyncClient, browser_page: Page,
    tmp_path: Path,
) -> None:
    page, console = browser_page, system.console
    target = await submit(esp, 1)
    await sign_in(page, console)
    await page.evaluate("window.loadedOnce = 'yes'")  # gone if the page reloads
    referral = await agencies.notice(agencies.wrong, target, "referral")
    await agencies.clients[agencies.wrong].ack(referral)  # signed with an unregistered key

    refused = row("refused", agencies.wrong)
    await page.wait_for_selector(f"{refused}:has-text('acks refused: unknown key')",
                                 timeout=30_000)
    text = await page.text_content(refused)
    assert text is not None and "since" in text and "UTC" in text
    health = f'#agencies tr[data-agency="{agencies.wrong}"] td[data-col="refused"]'
    assert "acks refused: unknown key" in (await page.text_content(health) or "")
    assert await page.evaluate("window.loadedOnce") == "yes", "the page was reloaded"

    await page.click(f"{refused} a[href='/agencies/{agencies.wrong}']")
    await page.wait_for_url(f"{console}/agencies/{agencies.wrong}")
    cause = await page.text_content(".refusing")
    assert cause is not None and "acks refused: unknown key" in cause and "since" in cause
    assert await page.locator(f'#refused tr:has(a[href="/reports/{target}"])').count() >= 1
    assert "Synthetic agency" in (await page.text_content("h1") or "")  # its registry name
    await page.screenshot(path=tmp_path / "agency-refused.png", full_page=False)
    save(tmp_path, {"agency-refused.png": "console-agency-refused.png"})


async def test_a_correction_overdue_then_escalated_appears_in_the_queue_without_a_reload(
    system: Stack, agencies: Agencies, esp: httpx.AsyncClient, browser_page: Page,
    tmp_path: Path,
) -> None:
    page, console = browser_page, system.console
    target = await submit(esp, 2)
    for agency in (agencies.acking, agencies.silent):
        await agencies.notice(agency, target, "referral")
    await sign_in(page, console)
    await page.evaluate("window.loadedOnce = 'yes'")
    retracted = await esp.post(f"/v1/reports/{target}/retract",
                               json={"reason": "synthetic: reported in error"})
    assert retracted.status_code == 202, retracted.text
    correction = await agencies.notice(agencies.acking, target, "correction")
    await agencies.clients[agencies.acking].ack(correction)

    started = time.monotonic()
    await page.wait_for_selector(row("overdue", agencies.silent, target),
                                 timeout=int(ACK_TIMEOUT_S * 1000) + 30_000)
    overdue_after = time.monotonic() - started
    await page.wait_for_selector(row("escalated", agencies.silent, target),
                                 timeout=int(ACK_TIMEOUT_S * 2000) + 30_000)
    escalated_after = time.monotonic() - started
    assert await page.locator(row("overdue", agencies.silent, target)).count() == 0
    assert await page.locator(row("overdue", agencies.acking, target)).count() == 0
    assert await page.evaluate("window.loadedOnce") == "yes", "the page was reloaded"
    await page.screenshot(path=tmp_path / "overview-queue.png", full_page=False)
    save(tmp_path, {"overview-queue.png": "console-overview-queue.png"})
    print(f"in the queue without a reload: overdue {overdue_after:.1f} s, escalated "
          f"{escalated_after:.1f} s after the retraction (ack timeout {ACK_TIMEOUT_S} s, "
          f"{MAX_RESENDS} re-send)")

    # The report's page: both the retraction and the correction, and who retracted it, why.
    await page.goto(f"{console}/reports/{target}")
    assert "retracted" in (await page.text_content('[data-col="retraction"]') or "")
    assert "escalated" in (await page.text_content('[data-col="correction"]') or "")
    assert "synthetic: reported in error" in (await page.text_content(".reason") or "")
    assert await page.locator("dd .actor").count() == 1
    record = await page.request.get(f"{console}/reports/{target}/delivery.json")
    rows = {r["agency_id"]: r for r in await record.json()}
    assert rows[agencies.silent]["correction_state"] == "escalated"
    assert rows[agencies.acking]["correction_acknowledged_at"] is not None
    backlog = await page.request.get(f"{console}/agencies/{agencies.silent}/backlog.csv")
    assert backlog.ok and target in await backlog.text()


async def test_focus_selection_and_scroll_stay_across_live_updates(
    system: Stack, agencies: Agencies, esp: httpx.AsyncClient, browser_page: Page,
) -> None:
    page, console = browser_page, system.console
    await page.set_viewport_size({"width": 1280, "height": 600})
    await sign_in(page, console)
    link = f'#agencies a[href="/agencies/{agencies.acking}"]'
    await page.focus(link)
    await page.evaluate(f"document.querySelector('{link}').marked = 'the same element'")
    await page.evaluate("""() => {
        const h = document.querySelector('#flow h2');
        const range = document.createRange();
        range.selectNodeContents(h);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        window.scrollTo(0, 300);
    }""")
    selected = await page.evaluate("getSelection().toString()")
    before = await page.text_content(f'#agencies tr[data-agency="{agencies.acking}"] '
                                     'td[data-col="referred"]')
    target = await submit(esp, 3)  # moves the counters the page shows
    await agencies.notice(agencies.acking, target, "referral")
    await page.wait_for_function(
        f"""() => document.querySelector('#agencies tr[data-agency="{agencies.acking}"] '
            + 'td[data-col="referred"]').textContent !== {before!r}""", timeout=30_000)
    assert await page.evaluate("document.activeElement.marked") == "the same element"
    assert await page.evaluate("getSelection().toString()") == selected != ""
    assert await page.evaluate("window.scrollY") == 300

    # Paused: says so; resumed: live again, and the page catches up.
    await page.click("#live-pause")
    assert await page.get_attribute("#live-state", "data-state") == "paused"
    assert "paused" in (await page.text_content("#live-state") or "")
    await page.click("#live-pause")
    await page.wait_for_selector('#live-state[data-state="live"]:has-text("updated")')


async def test_filters_round_trip_through_the_url(
    system: Stack, agencies: Agencies, esp: httpx.AsyncClient, browser_page: Page,
) -> None:
    page, console = browser_page, system.console
    target = await submit(esp, 4)
    await agencies.notice(agencies.silent, target, "referral")
    await sign_in(page, console)
    await page.select_option("form.filters select[name=agency]", agencies.silent)
    await page.select_option("form.filters select[name=state]", "referred")
    await page.fill("form.filters input[name=esp]", ESP)
    await page.select_option("form.filters select[name=last]", "1h")
    await page.select_option("form.filters select[name=sort]", "priority")
    await page.click("form.filters button")
    await page.wait_for_selector(f'#reports tr[data-report="{target}"]')
    asked = {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}
    assert asked == {"agency": agencies.silent, "state": "referred", "esp": ESP,
                     "last": "1h", "sort": "priority"}
    shown = await page.locator("#reports tr[data-report]").evaluate_all(
        "rows => rows.map(r => r.dataset.report)")
    # The URL shared: the same view in a new page.
    other = await page.context.new_page()
    await other.goto(page.url)
    assert await other.locator("#reports tr[data-report]").evaluate_all(
        "rows => rows.map(r => r.dataset.report)") == shown
    for name, value in asked.items():
        assert await other.eval_on_selector(
            f"form.filters [name={name}]", "e => e.value") == value
    # A sortable column: its header link puts the order in the URL.
    await other.click("#reports th a:has-text('priority')")
    await other.wait_for_url(lambda url: "order=asc" in url)
    assert "sort=priority" in other.url
    # A filter it does not know: refused with the reason, not a server error.
    answer = await other.goto(f"{console}/?state=bogus")
    assert answer is not None and answer.status == 400
    assert "state must be one of" in (await other.text_content("main") or "")


async def test_every_page_fits_a_phone_and_every_text_is_legible(
    system: Stack, agencies: Agencies, esp: httpx.AsyncClient, browser_page: Page,
    tmp_path: Path,
) -> None:
    page, console = browser_page, system.console
    target = await submit(esp, 5)
    await agencies.notice(agencies.wrong, target, "referral")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{console}/login")
    paths = ["/login", "/", "/?kind=overdue", "/agencies", f"/agencies/{agencies.wrong}",
             f"/agencies/{agencies.silent}", f"/reports/{target}", f"/search?q={target[:6]}",
             f"/search?esp={ESP[:5]}", "/deadletters", "/?state=bogus"]
    await sign_in(page, console)
    widths, illegible = {}, {}
    for path in paths:
        await page.goto(f"{console}{path}")
        # Measured once the live script has drawn its header (login has none).
        await page.wait_for_function(
            "!document.getElementById('live') || document.body.dataset.live !== undefined")
        widths[path] = await page.evaluate("document.documentElement.scrollWidth")
        illegible[path] = await page.evaluate(CONTRAST)
        if path == "/":
            await page.screenshot(path=tmp_path / "overview-390.png", full_page=False)
    print(f"scrollWidth at 390 px: {widths}")
    assert all(w <= 390 for w in widths.values()), widths
    assert not any(illegible.values()), {p: x for p, x in illegible.items() if x}
    save(tmp_path, {"overview-390.png": "console-overview-390.png"})


async def test_a_console_stopped_shows_offline_within_5_s(
    system: Stack, agencies: Agencies, browser_page: Page, tmp_path: Path,
) -> None:
    """A console copy of its own (its own store), stopped while the page watches it."""
    port, ops = free_port(), free_port()
    env = {**system.env(), "TIPLINE_KEYS_DIR": str(system.workdir / "keys"),
           "TIPLINE_ROUTING_FILE": str(system.workdir / "routing.yaml"),
           "TIPLINE_CONSOLE_PORT": str(port), "TIPLINE_OPS_PORT": str(ops),
           "TIPLINE_CONSOLE_DATA_DIR": str(tmp_path / "console"),
           "TIPLINE_CONSOLE_SESSION_SECRET": "s" * 48, "OTEL_SERVICE_NAME": "console"}
    with (tmp_path / "console.log").open("ab") as log:
        copy = subprocess.Popen([sys.executable, "-m", "services.console"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        page, console = browser_page, f"http://127.0.0.1:{port}"
        await sign_in(page, console)
        await page.wait_for_selector('#live-state[data-state="live"]')
        copy.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        await page.wait_for_selector('#live-state[data-state="offline"]', timeout=10_000)
        took = time.monotonic() - stopped
        text = await page.text_content("#live-state")
        print(f"offline shown {took:.1f} s after the console was stopped: {text!r}")
        assert took <= 5.0 and text is not None and text.startswith("offline since")
        assert copy.wait(30) == 0
    finally:
        if copy.poll() is None:
            copy.kill()
            copy.wait()


def save(folder: Path, names: dict[str, str]) -> None:
    """Screenshots for the closing note, where there is a notes folder."""
    with contextlib.suppress(OSError):
        NOTES.mkdir(parents=True, exist_ok=True)
        for name, kept in names.items():
            shutil.copy(folder / name, NOTES / kept)


# Every visible text's contrast with the background it sits on (WCAG 2 relative luminance):
# the texts under 4.5:1.
CONTRAST = """() => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lin = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  const under = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode, el = node.parentElement;
    if (!node.nodeValue.trim() || !el || el.closest('svg')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none' || !el.offsetParent
        && el.tagName !== 'BODY') continue;
    const a = lum(rgb(style.color).slice(0, 3)), b = lum(under(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) bad.push(`${el.tagName}.${el.className}: ${node.nodeValue.trim()
      .slice(0, 30)} ${ratio.toFixed(2)}`);
  }
  return bad;
}"""
