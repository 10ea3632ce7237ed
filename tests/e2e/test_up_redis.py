"""`tipline up` and Redis: against a Redis it was given (REDIS_URL) it adds no development
account to it (finding 10): only a stack running its own Valkey makes the dev analyst; on its own
Valkey each service runs as its own ACL user (issue 26, item 5)."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import NoPermissionError

from tests.e2e.test_demo import alive, children_of, clean_env
from tipline.stack import SERVICES, Stack, free_port, operator_login
from tipline.status import load_state

pytestmark = pytest.mark.e2e


def test_up_on_a_given_redis_adds_no_dev_analyst(servers: Stack, tmp_path: Path) -> None:
    port = free_port()
    env = {**clean_env(tmp_path), "REDIS_URL": servers.redis}
    up = subprocess.Popen([sys.executable, "-m", "tipline.cli", "up", "--port", str(port)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        assert up.stdout is not None
        for line in up.stdout:  # bounded: `up` prints a few dozen lines, then waits
            lines.append(line)
            if "tipline is up" in line or "stopped unexpectedly" in line or len(lines) > 200:
                break
        output = "".join(lines)
        assert "tipline is up" in output, output[-3000:]
        assert "analyst login: none made" in output
        assert "tipline analyst add" in output
        assert not (tmp_path / "stack" / "analyst-credentials").exists()
        assert not (tmp_path / "stack" / "valkey-password").exists()  # no Valkey of its own
        redis = Redis.from_url(servers.redis, decode_responses=True)
        try:
            assert not redis.hexists("tipline:analysts", "dev-analyst")
        finally:
            redis.close()
    finally:
        family = children_of(up.pid)
        up.terminate()
        up.wait(timeout=60)
        assert not alive(family), f"left behind: {alive(family)}"


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def owner_of_port(port: int, server: int, pids: dict[int, str]) -> str | None:
    """Which of these processes holds the loopback TCP socket from local `port` to the server's
    port. Closed sockets in TIME_WAIT (inode 0) may share the local port: they are passed over."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = (int(fields[1].split(":")[1], 16),
                                int(fields[2].split(":")[1], 16), fields[9])
        if (local, remote) == (port, server) and inode != "0":
            return next((name for pid, name in pids.items() if inode in socket_inodes(pid)),
                        None)
    return None


def test_up_runs_each_service_as_its_own_redis_user(tmp_path: Path) -> None:
    """On its own Valkey, `tipline up` gives each service process its own ACL user: every
    connection a service holds is logged in as that service (the Valkey's CLIENT LIST, read as
    the operator, matched to the process by its socket), no service holds the operator's
    password, and a service's login is refused another owner's keys on the stack's Valkey."""
    port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "tipline.cli", "up", "--port", str(port)],
                          env=clean_env(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    workdir = tmp_path / "stack"
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:  # bounded: `up` prints a few dozen lines, then waits
            lines.append(line)
            if "tipline is up" in line or "stopped unexpectedly" in line or len(lines) > 200:
                break
        assert "tipline is up" in "".join(lines), "".join(lines)[-3000:]
        state = load_state(workdir)
        assert state is not None
        services = {c["pid"]: c["name"] for c in state["children"] if c["name"] in SERVICES}
        assert sorted(services.values()) == sorted(SERVICES)
        login = operator_login(workdir)
        assert login is not None and login[0] == "operator"
        logins = {}
        for pid, name in services.items():
            env = dict(entry.split("=", 1) for entry in
                       Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry)
            assert env["REDIS_USERNAME"] == name, name
            assert env["REDIS_PASSWORD"] != login[1], name
            logins[name] = env["REDIS_PASSWORD"]
        for child in state["children"]:  # each service asks Redis whether it is ready
            if child["name"] in SERVICES:
                deadline = time.monotonic() + 60
                while httpx.get(f"{child['ops']}/readyz", timeout=5).status_code != 200:
                    assert time.monotonic() < deadline, f"{child['name']} never ready"
                    time.sleep(0.2)
        redis = Redis.from_url(state["redis"], username=login[0], password=login[1],
                               decode_responses=True)
        try:
            clients = redis.client_list()
            users_by_service: dict[str, set[str]] = {}
            for client in clients:
                name = owner_of_port(int(client["addr"].rsplit(":", 1)[1]),
                                         int(client["laddr"].rsplit(":", 1)[1]), services)
                if name:
                    users_by_service.setdefault(name, set()).add(client["user"])
            assert users_by_service == {s: {s} for s in SERVICES}, users_by_service
            # A service's own login, on the stack's Valkey, against another owner's keys.
            for service, forbidden in (("intake", "tipline:analysts"),
                                       ("console", "tipline:esps"),
                                       ("validation", "tipline:{1}:ledger")):
                as_service = Redis.from_url(state["redis"], username=service,
                                            password=logins[service])
                try:
                    with pytest.raises(NoPermissionError):
                        as_service.hget(forbidden, "dev-analyst")
                finally:
                    as_service.close()
        finally:
            redis.close()
    finally:
        family = children_of(up.pid)
        up.terminate()
        up.wait(timeout=60)
        assert not alive(family), f"left behind: {alive(family)}"
