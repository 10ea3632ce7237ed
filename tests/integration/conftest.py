"""Fixtures the intake API tests share: two ESP logins, and a client of the module's `app`."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from services.intake.esps import EspRegistry
from shared.settings import Settings
from shared.store import connect


@pytest.fixture(scope="module")
async def esps(settings: Settings) -> dict[str, tuple[str, str]]:
    """ESPs "a" and "b": (name, password) each, new for every module."""
    redis = connect(settings)
    registry = EspRegistry(redis)
    out = {}
    for who in ("a", "b"):
        name = f"esp-{who}-{uuid.uuid4().hex[:8]}"
        out[who] = (name, await registry.add(name))
    await redis.aclose()
    return out


@pytest.fixture
async def http(app: FastAPI, esps: dict[str, tuple[str, str]]) -> AsyncIterator[httpx.AsyncClient]:
    """ESP "a" calling the module's intake `app`."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://intake",
                                 auth=esps["a"]) as client:
        yield client
