"""What the end-to-end tests share: a bounded wait, and the agencies set up for the services a
test starts (routing file, response keys, acknowledgement timing)."""

import asyncio
import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.kafka import consumer_lag
from shared.settings import Settings
from shared.signing import Signer
from tests.integration.agency_helpers import registered
from tipline.stack import SERVICES, Stack, create_topics, free_port, start_services

CHROMIUM = os.environ.get("TIPLINE_CHROMIUM", "/usr/bin/chromium")  # Debian's, not Playwright's
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def needs_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")


async def until(check: Any, what: str, timeout: float = 30.0) -> Any:
    """What `check()` (or the awaitable it returns) gives once it is true; fails naming `what`
    after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def drained(settings: Settings, *groups: str) -> None:
    """Once each of these consumer groups in turn has committed everything on its topics: what
    a group wrote before committing has been written, so the next group in line has it to read.
    A group with nothing committed yet has handled nothing: no wait for it."""
    for group in groups:
        async def caught_up(group: str = group) -> bool:
            lag = await consumer_lag(settings)
            return not any(lag.get(group, {}).values())
        await until(caught_up, f"{group} to catch up")


def agencies_for_services(
    env: pytest.MonkeyPatch, workdir: Path, agencies: list[str], *, keyless: tuple[str, ...],
    ack_timeout_s: float, max_resends: int,
) -> dict[str, Signer]:
    """Set in `env`, for the services a test starts: a routing file of `agencies`, each but
    `keyless` with a registered response-signing key, and how long they wait for an
    acknowledgement and re-send. Each keyed agency's signer."""
    routing, signers = registered(workdir, agencies, keyless=keyless)
    env.setenv("TIPLINE_ROUTING_FILE", str(routing))
    env.setenv("TIPLINE_ACK_TIMEOUT_S", str(ack_timeout_s))
    env.setenv("TIPLINE_MAX_RESENDS", str(max_resends))
    env.setenv("TIPLINE_RESEND_TICK_S", "0.2")
    return signers


@contextlib.contextmanager
def console_system(servers: Stack, workdir: Path, agencies: list[str], *,
                   ack_timeout_s: float, max_resends: int) -> Iterator[Stack]:
    """Every service, the console's browser tests' way: on the session's servers, with a routing
    file of `agencies` (the third keyless) and the keys in `workdir`; each must stop by itself.
    Skips where Debian's Chromium is missing."""
    needs_chromium()
    with pytest.MonkeyPatch.context() as env:
        agencies_for_services(env, workdir, agencies, keyless=(agencies[2],),
                              ack_timeout_s=ack_timeout_s, max_resends=max_resends)
        env.setenv("TIPLINE_KEYS_DIR", str(workdir / "keys"))
        stack = Stack(kafka=servers.kafka, redis=servers.redis,
                      http=f"http://127.0.0.1:{free_port()}", workdir=workdir,
                      analyst=f"http://127.0.0.1:{free_port()}",
                      console=f"http://127.0.0.1:{free_port()}")
        create_topics(stack)
        try:
            start_services(stack, SERVICES)
            yield stack
        finally:
            killed = stack.stop()
            assert not killed, f"had to be killed: {killed}"
