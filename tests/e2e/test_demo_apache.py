"""The README's two commands on Apache Kafka: `tipline up --kafka apache`, then `tipline demo
--url` against it from another process that knows only the workdir. The demo's agencies follow
their topics as the stack's admin (logins kept in the workdir), every referral and correction
arrives, and `tipline status` finds the broker and a login the same way."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.apache_support import require_apache_kafka
from tests.e2e.test_demo import TIPLINE, clean_env
from tests.e2e.test_restart import stop, up
from tipline.stack import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_the_demo_matches_on_apache_kafka(tmp_path: Path) -> None:
    require_apache_kafka()
    port = free_port()
    process, said = up(tmp_path, port, "--kafka", "apache")
    try:
        assert "SASL_SSL SCRAM-SHA-512" in said
        demo = subprocess.run(
            [*TIPLINE, "demo", "--url", f"http://127.0.0.1:{port}", "--reports", "20"],
            env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        figures = json.loads(demo.stdout.strip().splitlines()[-1])
        assert figures["matches"] and figures["corrections_expected"] > 0, figures
        status = subprocess.run([*TIPLINE, "status", "--json"], env=clean_env(tmp_path),
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
        seen = json.loads(status.stdout)
        assert all(p["alive"] and p["ready"] is not False for p in seen["processes"]), seen
        assert seen["lag_error"] is None and "tipline.reports.supplemented" in seen["lag"][
            "referral"], seen
    finally:
        stop(process)
