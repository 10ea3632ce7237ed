"""A service asked to stop, at any moment from start-up on, is gone within its grace period."""

import signal
import subprocess
import sys
import time

import pytest

from tipline.stack import Stack

GRACE_S = 1.0
DEADLINE_S = GRACE_S + 5  # shared.service: the grace period, then five seconds more


@pytest.mark.parametrize("after_s", [0.5, 1.5, 3.0, 6.0])
def test_sigterm_at_any_moment_ends_the_process(servers: Stack, after_s: float) -> None:
    env = {**servers.env(), "TIPLINE_SHUTDOWN_GRACE_S": str(GRACE_S), "TIPLINE_OPS_PORT": "0"}
    service = subprocess.Popen([sys.executable, "-m", "services.validation"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after_s)
    asked = time.monotonic()
    service.send_signal(signal.SIGTERM)
    try:
        service.wait(timeout=DEADLINE_S + 5)
    except subprocess.TimeoutExpired:
        service.kill()
        pytest.fail(f"still running {DEADLINE_S + 5} s after SIGTERM")
    print(f"SIGTERM after {after_s} s: exit {service.returncode} in "
          f"{time.monotonic() - asked:.1f} s")
