"""A transient fault is never answered as if for good: with Redis away, every door (intake's
/ispws and /v1 with their logins and Idempotency-Keys, the analyst API, the console's sign-in)
answers 503 with Retry-After, never a 4xx that an ESP or an analyst would give up on; and a
step that took effect just before Redis went is answered as accepted, not 503 (whose retry would
find it done and be refused, 409, for good).

Each test runs against a Valkey of its own, really stopped (SIGTERM) and started again on the
same port and data; intake, the analyst API and the console run in this process.
"""

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import SecretStr
from redis.asyncio import RedisCluster

from services.console.main import create_app as create_console
from services.intake.esps import EspRegistry
from services.intake.idempotency import Idempotency
from services.intake.main import create_app as create_intake
from services.supplementation.main import create_app as create_supplementation
from shared.analysts import AnalystDirectory
from shared.settings import Settings
from shared.store import connect
from tests.integration.test_pipeline import VALID
from tests.ispws_support import code, field, file_details, report_xml
from tipline.stack import Stack, free_port, spawn_valkey, write_valkey_config

XML = {"content-type": "text/xml"}
PASSWORD = "synthetic-analyst-password"


@dataclass
class Valkey:
    stack: Stack

    @property
    def url(self) -> str:
        return self.stack.redis

    def stop(self) -> None:
        (child,) = self.stack.children
        child.process.send_signal(signal.SIGTERM)
        child.process.wait(10)
        self.stack.children.clear()

    def start(self) -> None:
        spawn_valkey(self.stack, "valkey")  # the same port and data


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    stack = Stack(kafka="", redis="", http="", workdir=tmp_path)
    port = free_port()
    write_valkey_config(stack, "valkey", port, "appendfsync always")
    stack.redis = f"redis://127.0.0.1:{port}/0"
    spawn_valkey(stack, "valkey")
    try:
        yield Valkey(stack)
    finally:
        stack.stop()


@pytest.fixture
def local(settings: Settings, valkey: Valkey, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"redis_url": valkey.url,
                                       "tipline_files_dir": tmp_path / "files"})


@pytest.fixture
async def intake(local: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """ESP calls to intake on the test's Valkey, with a new ESP's login."""
    async with intake_on(local) as (http, _):
        yield http


def unavailable(response: httpx.Response) -> bool:
    return response.status_code == 503 and int(response.headers.get("retry-after", 0)) > 0


async def test_every_esp_step_with_its_reports_shard_away_answers_503_with_retry_after(
    settings: Settings, valkey_cluster: Stack, tmp_path: Path
) -> None:
    """A Redis Cluster with the shard that holds the ESP's reports stopped, the rest up (the
    login and the Idempotency-Keys answer): each step reaches its report's reads and writes,
    and each answers 503 with Retry-After, never "no such report" or another refusal."""
    operator = valkey_cluster.settings(kafka_bootstrap_servers=settings.kafka_bootstrap_servers)
    login = valkey_cluster.service_env["intake"]  # intake logs in as its own ACL user
    local = operator.model_copy(update={
        "redis_username": login["REDIS_USERNAME"],
        "redis_password": SecretStr(login["REDIS_PASSWORD"]),
        "tipline_files_dir": tmp_path / "files", "tipline_keys_dir": settings.tipline_keys_dir})
    cluster = connect(operator)
    assert isinstance(cluster, RedisCluster)
    await cluster.initialize()

    def shard(key: str) -> str:
        node = cluster.get_node_from_key(key)
        assert node is not None, key  # every slot is served
        return node.name

    esps_shard = shard("tipline:esps")

    async with intake_on(local, operator) as (http, esp_id):
        opened, submitted = "", ""
        while not opened:  # a report on a shard other than the logins'
            r = await http.post("/ispws/submit", content=report_xml(), headers=XML)
            candidate = field(r.text, "reportId")
            if shard(f"tipline:{{{candidate}}}:draft") != esps_shard:
                opened = candidate
        victim = shard(f"tipline:{{{opened}}}:draft")
        while not submitted:
            candidate = (await http.post("/v1/reports", json={"report": VALID})).json()[
                "report_id"]
            if shard(f"tipline:{{{candidate}}}:draft") == victim:
                submitted = candidate
        upload = await http.post("/ispws/upload", data={"id": opened},
                                 files={"file": ("f.jpg", b"synthetic bytes")})
        file_id = field(upload.text, "fileId")
        key = next(k for k in (uuid.uuid4().hex for _ in range(100))
                   if shard(Idempotency.slot(esp_id, k)) != victim)
        (child,) = [c for c in valkey_cluster.children
                    if c.name == shard_name(valkey_cluster, victim)]
        child.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(child.process.wait, 10)
        valkey_cluster.children.remove(child)
        try:
            keyed = {"Idempotency-Key": key}
            # Each call costs the cluster client's retries (about 5 s): one a way in.
            calls: dict[str, tuple[str, str, dict[str, Any]]] = {
                "ispws fileinfo": ("POST", "/ispws/fileinfo",
                                   {"content": file_details(opened, file_id), "headers": XML}),
                "ispws cancel, keyed": ("POST", "/ispws/retract",
                                        {"data": {"id": opened}, "headers": keyed}),
                "v1 status": ("GET", f"/v1/reports/{submitted}", {}),
                "v1 submit superseding": ("POST", "/v1/reports", {
                    "json": {"report": VALID, "supersedes": submitted}}),
            }
            answers = {what: await http.request(method, path, **kw)
                       for what, (method, path, kw) in calls.items()}
            assert {what: r.status_code for what, r in answers.items()
                    if not unavailable(r)} == {}, {w: r.text[:300] for w, r in answers.items()}
        finally:
            await asyncio.to_thread(spawn_valkey, valkey_cluster, child.name)
        cancelled = await retried(http, "/ispws/retract", data={"id": opened}, headers=keyed)
        assert (cancelled.status_code, code(cancelled.text)) == (200, 0), cancelled.text
    await cluster.aclose()


def shard_name(stack: Stack, node: str) -> str:
    """The child (valkey-<n>) listening on a cluster node's host:port."""
    port = node.rsplit(":", 1)[1]
    return next(c.name for c in stack.children if c.name.startswith("valkey-") and
                f"port {port}\n" in (stack.workdir / f"{c.name}.conf").read_text())


@contextlib.asynccontextmanager
async def intake_on(local: Settings, operator: Settings | None = None
                    ) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """Intake in this process on `local`'s Redis, and a new ESP's client of it (made by the
    `operator`'s login where the Redis has ACL users)."""
    app = create_intake(local)
    redis = connect(operator or local)
    name = f"esp-{uuid.uuid4().hex[:8]}"
    login = (name, await EspRegistry(redis).add(name))
    await redis.aclose()
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://intake", auth=login,
            timeout=60) as http:
        yield http, name


async def retried(http: httpx.AsyncClient, path: str, **kw: Any) -> httpx.Response:
    """POST as a client does after a 503: again, a few times (the first connection may be one
    the server closed when it stopped)."""
    for _ in range(20):
        response = await http.post(path, **kw)
        if not unavailable(response):
            return response
    return response


@pytest.mark.parametrize("step", ["cancel, keyed", "upload"])
async def test_a_step_taken_just_before_redis_went_is_answered_accepted(
    intake: httpx.AsyncClient, valkey: Valkey, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Redis goes once the step is stored and its event sent, before what follows (keeping the
    Idempotency-Key's answer; noting the file's content for duplicates): the ESP gets its
    answer. (Before, a 503 sent it back: its cancel, retried once the key's lease lapsed, found
    the report retracted and got 409 5101 for good; its upload was kept twice.)"""
    opened = field((await intake.post("/ispws/submit", content=report_xml(), headers=XML)).text,
                   "reportId")
    app: FastAPI = intake._transport.app  # type: ignore[attr-defined]
    outbox = app.state.reporting.reports.outbox
    deliver = outbox.deliver

    async def then_redis_goes(*args: Any) -> bool:
        delivered: bool = await deliver(*args)
        valkey.stop()
        return delivered

    monkeypatch.setattr(outbox, "deliver", then_redis_goes)
    if step == "upload":
        answer = await intake.post("/ispws/upload", data={"id": opened},
                                   files={"file": ("f.jpg", b"synthetic bytes")})
    else:
        answer = await intake.post("/ispws/retract", data={"id": opened},
                                   headers={"Idempotency-Key": uuid.uuid4().hex})
    assert (answer.status_code, code(answer.text)) == (200, 0), answer.text


async def test_analyst_api_with_redis_away_answers_503_with_retry_after(
    local: Settings, valkey: Valkey
) -> None:
    redis = connect(local)
    await AnalystDirectory(redis).add("transient-analyst", PASSWORD)
    await redis.aclose()
    app = create_supplementation(local)
    async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app.analyst_api),  # type: ignore[attr-defined]
            base_url="http://analyst", auth=("transient-analyst", PASSWORD)) as http:
        assert (await http.get("/v1/analyst/reports/1")).status_code == 404  # signed in
        valkey.stop()
        for answer in (await http.get("/v1/analyst/reports/1"),
                       await http.post("/v1/analyst/reports/1/hold", json={"reason": "r"})):
            assert unavailable(answer), (answer.status_code, answer.text)


async def test_console_sign_in_and_pages_with_redis_away_answer_503_with_retry_after(
    local: Settings, valkey: Valkey, tmp_path: Path
) -> None:
    redis = connect(local)
    await AnalystDirectory(redis).add("transient-operator", PASSWORD, role="operator")
    await redis.aclose()
    app = create_console(local.model_copy(update={
        "tipline_console_session_secret": SecretStr("s" * 40), "tipline_console_port": 0,
        "tipline_console_data_dir": tmp_path / "console"}))
    async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app.console_api),  # type: ignore[attr-defined]
            base_url="http://console") as http:
        form = {"analyst_id": "transient-operator", "password": PASSWORD}
        signed_in = await http.post("/login", data=form)
        assert signed_in.status_code == 303
        valkey.stop()
        answer = await http.post("/login", data=form)
        assert unavailable(answer), (answer.status_code, answer.text[:300])
        assert "try again" in answer.text
        # A page's session cannot be checked: "try again", not "sign in" (401, the login page).
        page = await http.get("/live/version", cookies=signed_in.cookies)
        assert unavailable(page), (page.status_code, page.text[:300])


async def test_an_answer_saying_try_again_is_not_kept_for_the_idempotency_key(
    settings: Settings,
) -> None:
    """A call answered 429 or 503 with Retry-After (a document pool full, a login queue full)
    under an Idempotency-Key: its retry runs again, never replays "try again" for good."""
    redis = connect(settings)
    idempotency = Idempotency(redis, ttl_s=60)
    answers = iter([Response(b"busy", 429, {"Retry-After": "1"}),
                    Response(b"busy", 503, {"Retry-After": "2"}), Response(b"checked", 200)])
    calls = 0

    async def call(reserved: str | None) -> Response:
        nonlocal calls
        calls += 1
        return next(answers)

    key = uuid.uuid4().hex
    try:
        got = [await idempotency.run("esp-busy", key, "/ispws/submit", call) for _ in range(4)]
    finally:
        await redis.aclose()
    assert [r.status_code for r in got] == [429, 503, 200, 200] and calls == 3
    assert got[3].headers["idempotent-replayed"] == "true"
