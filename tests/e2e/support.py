"""What the end-to-end tests share: a bounded wait, and the agencies set up for the services a
test starts (routing file, response keys, acknowledgement timing)."""

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

from shared.kafka import consumer_lag
from shared.settings import Settings
from shared.signing import Signer
from tests.integration.agency_helpers import registered


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
