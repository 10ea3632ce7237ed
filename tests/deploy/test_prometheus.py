"""The alert rules and the Grafana dashboard beside them (deploy/prometheus): promtool checks the
rules and runs their unit tests (every alert has one that fires), and every series they name is
one the code exports."""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401
from services.console import alerts
from tests.deploy.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES, TESTS = PROMETHEUS / "alerts.yaml", PROMETHEUS / "alerts.test.yaml"
DASHBOARD = PROMETHEUS / "grafana-dashboard.json"
SERIES = re.compile(r"\b(tipline_[a-z_]+)")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool (apt-get install prometheus; .ci/run does)")
    return found


def exported() -> set[str]:
    """Every series name the services and the console export (the console's per-agency ones
    only once it has caught up: by their declaration)."""
    names = alerts.metric_names()
    for family in REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
    return names


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([tool, "test", "rules", TESTS.name], capture_output=True, text=True,
                            timeout=120, cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_test_that_fires_it() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    assert {"TiplineCorrectionOverdue", "TiplineCorrectionEscalated", "TiplineAgencyAcksRefused",
            "TiplineConsumerLagGrowing"} <= alerts
    fired = {case["alertname"] for test in yaml.safe_load(TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in yaml.safe_load(TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if not case.get("exp_alerts")}
    assert alerts == fired == quiet, "each alert: a test where it fires, and one where not yet"


def test_the_rules_and_the_dashboard_name_only_series_the_code_exports() -> None:
    rules = RULES.read_text()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    named = set(SERIES.findall(rules)) | {n for e in exprs for n in SERIES.findall(e)} | set(
        SERIES.findall(json.dumps(dashboard["templating"])))
    assert named - exported() == set()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert dashboard["uid"] and dashboard["timezone"] == "utc"
