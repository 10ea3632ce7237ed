"""`tipline bench --quick` as a load tester runs it: its own embedded stack, every stage, the
table and the JSON. Figures are only checked for being there, never for their size."""

import json
import subprocess
import sys
from pathlib import Path


def test_bench_quick_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "tipline.cli", "bench", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for line in ("(a) raw aiokafka relay chain", "ceiling: same relays, 1 partition",
                 "FastStream relay chain",
                 "(b) pipeline, Kafka in -> referral", "HTTP submit -> referral",
                 "retraction -> 50 agencies corrected", "ratio pipeline/raw throughput",
                 "pipeline/ceiling", "pipeline/raw CPU a message, all processes",
                 "CPU ms a message, pipeline", "GC pauses in the pipeline's latency stage",
                 "where the pipeline's latency goes", "its batches (records a batch",
                 "where the fan-out's latency goes",
                 "peak RSS MB"):
        assert line in run.stdout, run.stdout
    result = json.loads(out.read_text())
    assert result["raw"]["throughput_per_s"] > 0
    assert result["framework"]["throughput_per_s"] > 0
    assert result["pipeline"]["throughput_per_s"] > 0
    assert result["ratio"] > 0 and result["ratio_to_ceiling"] > 0
    # The CPU and p99 ratios, from the chains' own figures in the same run.
    assert result["cpu_ratio"] == round(
        sum(result["pipeline"]["cpu_ms_per_msg"].values())
        / sum(result["raw"]["cpu_ms_per_msg"].values()), 2)
    assert result["p99_ratio"] == round(
        result["pipeline"]["latency_ms"]["p99"] / result["raw"]["latency_ms"]["p99"], 2)
    # The ceiling: the raw relays, every message fed and sunk by processes of their own.
    assert result["ceiling"]["throughput_per_s"] > 0
    assert result["ceiling"]["latency_ms"]["not_arrived"] == 0
    assert {"broker", "ceiling-1", "ceiling-3"} <= result["ceiling"]["cpu_ms_per_msg"].keys()
    for stage in (result["raw"], result["pipeline"]):
        assert {"p50", "p95", "p99", "max"} <= stage["latency_ms"].keys()
    # CPU a message for every process of each chain, the broker's included.
    assert {"broker", "relay-1", "relay-3"} <= result["raw"]["cpu_ms_per_msg"].keys()
    assert {"broker", "valkey", "validation", "referral"} <= result["pipeline"][
        "cpu_ms_per_msg"].keys()
    assert all(result["pipeline"]["cpu_ms_per_msg"][p] > 0 for p in ("broker", "referral"))
    # Each service's collector pauses, read from its own /metrics around the latency stage.
    assert set(result["pipeline"]["latency_ms"]["gc_pauses"]) == {
        "intake", "validation", "supplementation", "referral", "retraction"}
    # Where the latency goes: each hop's share of every report of the stage, record to record,
    # and each hop's batches as its service's metrics counted them.
    latency = result["pipeline"]["latency_ms"]
    assert set(latency["hops"]) == {"validation", "supplementation", "referral", "to the reader"}
    assert all(hop["count"] == latency["count"] for hop in latency["hops"].values()), latency
    assert set(latency["batches"]) == {"validation", "supplementation", "referral"}
    assert all(b["batches"] > 0 and b["records_a_batch"] >= 1 and b["handler_ms"] > 0
               for b in latency["batches"].values()), latency["batches"]
    assert result["http"]["lost"] == 0 and result["fanout"]["lost"] == 0
    assert result["fanout"]["agencies"] == 50
    # And the fan-out's: each timed retraction through intake, retraction, and to the reader.
    fanout = result["fanout"]["latency_ms"]
    assert set(fanout["hops"]) == {"intake", "retraction", "to the reader"}
    assert all(hop["count"] == fanout["count"] for hop in fanout["hops"].values()), fanout
    assert set(result["memory_mb"]) == {"intake", "validation", "supplementation", "referral",
                                        "retraction"}


def test_idle_prints_each_process_share_and_the_total(tmp_path: Path) -> None:
    """`tipline idle` as a load tester runs it: the whole stack, every process measured."""
    out = tmp_path / "idle.json"
    run = subprocess.run(
        [sys.executable, "-m", "tipline.cli", "idle", "--seconds", "2", "--settle", "0",
         "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "idle stack on the embedded broker" in run.stdout and "total" in run.stdout
    result = json.loads(out.read_text())
    shares = result["share_of_a_core"]
    assert {"broker", "valkey", "intake", "validation", "supplementation", "referral",
            "retraction", "console"} <= shares.keys(), shares
    assert shares["broker"] > 0 and result["total"] >= max(shares.values())
