"""`tipline up` against a Redis it was given (REDIS_URL) adds no development account to it
(finding 10): only a stack running its own Valkey makes the dev analyst."""

import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from tests.e2e.test_demo import alive, children_of, clean_env
from tipline.stack import Stack, free_port

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
