"""`tipline console-bench` at a small size: the console service starts on a filled store (and a
tail on the broker past its checkpoint), every kind of page answers over HTTP, it restarts from
its checkpoint, and the figures it prints are there."""

from pathlib import Path

import pytest

from shared.settings import Settings
from tipline.consolebench import render, run


def test_every_page_answers_from_a_filled_store(settings: Settings, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    result = run(reports=300, requests=2, seed=5, workdir=tmp_path, tail=20)
    assert result["reports"] == 300 and result["records"] > 300 * 3
    assert result["tail_records"] > 20
    assert set(result["pages"]) >= {"overview", "overview filtered", "report", "report (tail)",
                                    "agency", "search id", "search ESP", "dead letters", "triage",
                                    "live fragment", "live version"}
    assert all(row["requests"] == 2 for row in result["pages"].values())
    assert result["rss_mb_peak"] >= result["rss_mb"] > 0
    assert result["start_s"] > 0 and result["restart_s"] > 0
    assert "p95 ms" in render(result) and "restart from the checkpoint" in render(result)
