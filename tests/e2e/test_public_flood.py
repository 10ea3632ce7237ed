"""A flood of public forms on loopback, against intake running as its own process on the real
broker and Valkey: 2,000 posts of the form from one address within a minute (sent by a process
of their own) are answered 429 with Retry-After (all but the few the address may send), while
an ESP submitting on /ispws ten times a second is answered, every time, all through. How fast
the ESP was served (median against the median before and after) and intake's memory are printed,
not asserted: a figure of a shared machine (docs/load-testing.md has them)."""

import asyncio
import multiprocessing
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import httpx
import pytest

from services.intake.esps import EspRegistry
from shared.settings import Settings
from shared.store import connect
from tests.ispws_support import report_xml
from tipline.stack import Stack, create_topics, free_port, start_services

pytestmark = pytest.mark.e2e
POSTS, WITHIN_S = 2_000, 50.0  # inside the minute, with room for a slow machine
ESP_SUBMITS, ESP_EVERY_S = 60, 0.1
XML = {"content-type": "text/xml; charset=utf-8"}


@pytest.fixture(scope="module")
def intake(servers: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("public-flood")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TIPLINE_KEYS_DIR", str(workdir / "keys"))
        env.setenv("TIPLINE_FILES_DIR", str(workdir / "files"))
        env.setenv("TIPLINE_PUBLIC_FORM_MIN_S", "0")  # the flood sends at once
        stack = Stack(kafka=servers.kafka, redis=servers.redis,
                      http=f"http://127.0.0.1:{free_port()}", workdir=workdir)
        create_topics(stack)
        try:
            start_services(stack, ("intake",))  # the defaults: 10 forms an address a window
            yield stack
        finally:
            stack.stop()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


async def submit_latencies(esp: httpx.AsyncClient, count: int,
                           until: asyncio.Future[Counter[str]] | None = None) -> list[float]:
    """Seconds each /ispws submit took, one every ESP_EVERY_S: `count` of them, and more until
    `until` is done."""
    took: list[float] = []
    while len(took) < count or (until is not None and not until.done()):
        started = time.perf_counter()
        answer = await esp.post("/ispws/submit", content=report_xml(), headers=XML)
        took.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
        await asyncio.sleep(max(0.0, ESP_EVERY_S - (time.perf_counter() - started)))
    return took


def form() -> dict[str, str]:
    return {"incident_type": "Child Sex Trafficking",
            "incident_date": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
            "description": "synthetic flood", "urls": "", "platform": "", "country": "",
            "us_state": "", "place": "", "contact_name": "", "contact_email": "",
            "contact_phone": ""}


async def flood(base: str) -> Counter[str]:
    """POSTS forms from one address, paced evenly over WITHIN_S, a few in flight at a time:
    how many were answered each way ("429 Retry-After" when it said when to come back)."""
    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 limits=httpx.Limits(max_connections=8)) as browser:
        page = await browser.get("/report")
        found = re.search(r'name="token" value="([^"]+)"', page.text)
        assert found, page.text
        body = {**form(), "token": unescape(found.group(1))}
        start = asyncio.get_running_loop().time()

        async def one(i: int) -> str:
            await asyncio.sleep(max(0.0, start + i * WITHIN_S / POSTS
                                    - asyncio.get_running_loop().time()))
            answer = await browser.post("/report", data=body)
            after = answer.headers.get("retry-after", "")
            waits = after.isdigit() and int(after) >= 1
            return f"{answer.status_code}{' Retry-After' if waits else ''}"

        return Counter(await asyncio.gather(*(one(i) for i in range(POSTS))))


def flood_from_another_process(base: str) -> Counter[str]:
    return asyncio.run(flood(base))


async def test_a_flood_from_one_address_is_asked_to_wait_and_esps_are_served(
        intake: Stack, settings: Settings) -> None:
    redis = connect(settings)
    login = ("esp-flood", await EspRegistry(redis).add("esp-flood"))
    await redis.aclose()
    pid = next(c.process.pid for c in intake.children if c.name == "intake")
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await loop.run_in_executor(pool, int, "0")  # the process started before any timing
        async with httpx.AsyncClient(base_url=intake.http, timeout=30, auth=login) as esp:
            await submit_latencies(esp, 10)  # warm: connections, the login remembered
            quiet = await submit_latencies(esp, ESP_SUBMITS)
            rss_before = rss_mb(pid)
            started = time.monotonic()
            flooding = loop.run_in_executor(pool, flood_from_another_process, intake.http)
            during = await submit_latencies(esp, ESP_SUBMITS, until=flooding)
            answers = await flooding
            flood_s = time.monotonic() - started
            rss_after = rss_mb(pid)
            # Quiet again: before and after, so a burst of the machine's other work at one
            # moment does not make the quiet figure.
            quiet += await submit_latencies(esp, ESP_SUBMITS)

    quiet_ms, during_ms = statistics.median(quiet) * 1000, statistics.median(during) * 1000
    print(f"\nflood: {POSTS} forms from one address in {flood_s:.1f} s: {dict(answers)}; "
          f"ESP /ispws submit median {quiet_ms:.1f} ms quiet ({len(quiet)} submits, p90 "
          f"{statistics.quantiles(quiet, n=10)[-1] * 1000:.1f} ms), {during_ms:.1f} ms during "
          f"({len(during)}, p90 {statistics.quantiles(during, n=10)[-1] * 1000:.1f} ms); "
          f"intake RSS {rss_before:.1f} -> {rss_after:.1f} MB")
    assert set(answers) <= {"200", "429 Retry-After"}, answers
    # The address's share (10 a window, one more earned back each minute), then 429 only.
    assert answers["200"] <= 11 and answers["429 Retry-After"] >= POSTS - 11
