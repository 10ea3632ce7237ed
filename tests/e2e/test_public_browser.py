"""The public form in a real browser (headless Chromium from Debian, driven by Playwright) against
intake running as its own process on the real broker and Valkey, as someone with no account
would use it: with the keyboard alone, on a desktop and on a 390 px phone.

- The form is filled in and sent with the keyboard alone (Tab, typing, arrow keys, Enter), and
  the receipt shows the report number and the secret code.
- With them, information is added to the report (keyboard again).
- A field in error is shown beside its field, the first one focused, everything else kept.
- At 390 px no page scrolls sideways.
Nothing is loaded from anywhere but intake. Screenshots at 1280 and 390 px go to the test's
folder (and a few to /work/notes for the closing note).
"""

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.e2e.support import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tipline.stack import Stack, create_topics, free_port, start_services

pytestmark = pytest.mark.e2e
NOTES = Path("/work/notes")
DESCRIPTION = "Synthetic: an adult account asked a child in a game chat to move to a private app."
FORM_MIN_S = 0.1  # the form's least time (3 s by default)


@pytest.fixture(scope="module")
def intake(servers: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    needs_chromium()
    workdir = tmp_path_factory.mktemp("public-browser")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TIPLINE_KEYS_DIR", str(workdir / "keys"))
        env.setenv("TIPLINE_FILES_DIR", str(workdir / "files"))
        # The form's least time, short: a form sent too soon is test_public_form.py's.
        env.setenv("TIPLINE_PUBLIC_FORM_MIN_S", str(FORM_MIN_S))
        stack = Stack(kafka=servers.kafka, redis=servers.redis,
                      http=f"http://127.0.0.1:{free_port()}", workdir=workdir)
        create_topics(stack)
        try:
            start_services(stack, ("intake",))
            yield stack
        finally:
            killed = stack.stop()
            assert not killed, f"had to be killed: {killed}"


@pytest.fixture
async def browser(intake: Stack) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def opened(browser: Browser, intake: Stack, width: int) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": width, "height": 900})
    page = await context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(intake.http) else outside.append(r.url))
    try:
        yield page
    finally:
        await context.close()
    assert not outside, f"the form loaded something from elsewhere: {outside}"


async def focused(page: Page) -> str:
    return str(await page.evaluate("document.activeElement.id || document.activeElement.tagName"))


async def tab_to(page: Page, target: str, limit: int = 40) -> None:
    """Press Tab until the element with id `target` (or a tag name) has the focus."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await focused(page) == target:
            return
    raise AssertionError(f"Tab never reached {target}")


async def no_sideways_scroll(page: Page) -> None:
    width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways at {width[1]} px: {width[0]}"


async def read_through(page: Page, since: float) -> None:
    """A person reads a form through before sending it: no sooner than the form's token wants."""
    left = FORM_MIN_S + 0.05 - (asyncio.get_running_loop().time() - since)
    if left > 0:
        await page.wait_for_timeout(left * 1000)


async def type_report(page: Page, *, email: str) -> None:
    """Fill the form in as a keyboard user does: Tab from field to field, type, choose with the
    keys; then read it through."""
    started = asyncio.get_running_loop().time()
    when = datetime.now(UTC) - timedelta(days=2)
    await tab_to(page, "incident_type")
    await page.keyboard.type("Online", delay=30)  # a select chooses by the letters typed
    await tab_to(page, "incident_date")
    await page.keyboard.type(when.strftime("%m%d%Y"), delay=30)
    await tab_to(page, "description")
    await page.keyboard.type(DESCRIPTION, delay=5)
    await tab_to(page, "urls")
    await page.keyboard.type("https://game.example.test/chat/77", delay=5)
    await tab_to(page, "platform")
    await page.keyboard.type("Synthetic Game", delay=5)
    await tab_to(page, "us_state")
    await page.keyboard.type("TX", delay=60)
    await tab_to(page, "contact_name")
    await page.keyboard.type("Synthetic Parent", delay=5)
    await tab_to(page, "contact_email")
    await page.keyboard.type(email, delay=5)
    await tab_to(page, "BUTTON")
    await read_through(page, started)


async def test_a_report_made_with_the_keyboard_alone_then_added_to(
        browser: Browser, intake: Stack, tmp_path: Path) -> None:
    async with opened(browser, intake, 1280) as page:
        await page.goto(f"{intake.http}/report")
        await page.screenshot(path=tmp_path / "form-1280.png", full_page=True)
        await type_report(page, email="parent@example.test")
        assert await page.input_value("#incident_type") == (
            "Online Enticement of Children for Sexual Acts")
        assert await page.input_value("#us_state") == "TX"
        assert await page.input_value("#incident_date")  # the date input took the keys
        await page.keyboard.press("Enter")  # on the focused Send button
        await page.wait_for_selector("[data-field=code]")
        assert "your report was received" in (await page.inner_text("h1"))
        number = await page.inner_text("[data-field=report_id]")
        code = await page.inner_text("[data-field=code]")
        assert number.isdigit() and len(code) == 24
        await page.screenshot(path=tmp_path / "receipt-1280.png", full_page=True)

        # The receipt's link to add information, then the form, with the keys alone.
        await tab_to(page, "A")
        while "Add information" not in await page.evaluate("document.activeElement.innerText"):
            await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#report_number")
        started = asyncio.get_running_loop().time()
        await tab_to(page, "report_number")
        await page.keyboard.type(number, delay=10)
        await tab_to(page, "code")
        await page.keyboard.type(code.lower().replace("-", " "), delay=10)  # as people type it
        await tab_to(page, "text")
        await page.keyboard.type("Synthetic: the account's name was x-77-synthetic.", delay=20)
        await tab_to(page, "BUTTON")
        await read_through(page, started)
        await page.keyboard.press("Enter")
        await page.wait_for_selector("text=your information was added")
        assert await page.inner_text("[data-field=report_id]") == number
        await page.screenshot(path=tmp_path / "added-1280.png", full_page=True)
    with contextlib.suppress(OSError):
        NOTES.mkdir(parents=True, exist_ok=True)
        for name in ("form-1280.png", "receipt-1280.png"):
            shutil.copy(tmp_path / name, NOTES / f"public-{name}")


async def test_a_field_error_shows_beside_its_field_with_the_rest_kept_at_390_px(
        browser: Browser, intake: Stack, tmp_path: Path) -> None:
    async with opened(browser, intake, 390) as page:
        await page.goto(f"{intake.http}/report")
        await no_sideways_scroll(page)
        await page.screenshot(path=tmp_path / "form-390.png", full_page=True)
        await type_report(page, email="parent-at-example.test")  # no @
        await page.keyboard.press("Enter")
        error = page.locator("#contact_email-error")
        await error.wait_for()
        assert "not a valid email address" in await error.inner_text()
        # Beside its field: in the field's own box, just above its input, which says so.
        field = page.locator("#contact_email-field")
        assert await field.locator("#contact_email-error").count() == 1
        box, control = await error.bounding_box(), await page.locator(
            "#contact_email").bounding_box()
        assert box and control and 0 <= control["y"] - (box["y"] + box["height"]) < 40
        assert await page.get_attribute("#contact_email", "aria-invalid") == "true"
        assert "contact_email-error" in (
            await page.get_attribute("#contact_email", "aria-describedby") or "")
        assert await focused(page) == "contact_email"  # the first field in error
        # Everything else as it was typed.
        assert await page.input_value("#description") == DESCRIPTION
        assert await page.input_value("#contact_email") == "parent-at-example.test"
        assert await page.input_value("#platform") == "Synthetic Game"
        assert await page.input_value("#us_state") == "TX"
        assert await page.input_value("#incident_type") == (
            "Online Enticement of Children for Sexual Acts")
        assert await page.locator(".summary a[href='#contact_email']").count() == 1
        await no_sideways_scroll(page)
        await page.screenshot(path=tmp_path / "error-390.png", full_page=True)

        # Corrected, it goes; the receipt fits the phone too.
        await page.fill("#contact_email", "")
        await page.keyboard.type("parent@example.test")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("[data-field=code]")
        await no_sideways_scroll(page)
        await page.screenshot(path=tmp_path / "receipt-390.png", full_page=True)
        await page.goto(f"{intake.http}/report/add")
        await no_sideways_scroll(page)
    with contextlib.suppress(OSError):
        NOTES.mkdir(parents=True, exist_ok=True)
        for name in ("error-390.png", "receipt-390.png"):
            shutil.copy(tmp_path / name, NOTES / f"public-{name}")
