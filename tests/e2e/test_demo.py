"""The whole system as separate processes: the demo's numbers, and nothing left behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

TIPLINE = [sys.executable, "-m", "tipline.cli"]


def children_of(pid: int) -> set[int]:
    """Every live descendant of pid, from /proc (sessions differ, so process groups won't do)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set[int](), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    return {**env, "TIPLINE_WORKDIR": str(tmp_path / "stack")}


def test_demo_delivers_every_correction(tmp_path: Path) -> None:
    # As `make run` runs it: the default workdir, `.tipline`, relative to where it runs.
    env = {k: v for k, v in clean_env(tmp_path).items() if k != "TIPLINE_WORKDIR"}
    result = subprocess.run(
        [*TIPLINE, "demo", "--reports", "30"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / ".tipline" / "logs").is_dir()
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["reports"] == 30
    assert figures["referrals"] > 0
    assert figures["retracted"] > 0
    assert figures["corrections_expected"] > 0
    assert figures["corrections_delivered"] == figures["corrections_expected"]


def start_up(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    up = subprocess.Popen(
        [*TIPLINE, "up", "--port", str(port)], env=clean_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    assert up.stdout is not None
    try:
        for line in up.stdout:
            if "tipline is up" in line or time.monotonic() > deadline:
                break
        httpx.get(f"http://127.0.0.1:{port}/ispws/xsd", timeout=5).raise_for_status()
    except BaseException:
        up.kill()  # never leave a stack running behind a failed test
        raise
    return up


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_stopping_up_leaves_no_process_behind(tmp_path: Path, how: signal.Signals) -> None:
    from tipline.stack import free_port

    up = start_up(tmp_path, free_port())
    family = children_of(up.pid)
    assert len(family) >= 7, "broker, valkey and five services"
    asked = time.monotonic()
    up.send_signal(how)
    up.wait(timeout=30)
    deadline = time.monotonic() + 20
    while alive(family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(family), f"left behind after {how.name}: {alive(family)}"
    assert up.stdout is not None
    said = up.stdout.read()
    print(f"\n{how.name}: everything gone {time.monotonic() - asked:.1f} s after it was asked")
    # Asked nicely, every child stops by itself: none had to be killed.
    assert "did not stop within" not in said, said
