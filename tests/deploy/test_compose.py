"""docker-compose.yml: valid against the Compose specification, and coherent with the code."""

import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    OTEL_ENV,
    ROOT,
    SERVICES,
    SIGNERS,
    dockerfile_stages,
    settings_env_names,
)

COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR = ROOT / "deploy/otel/collector.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    # check-jsonschema ships the Compose specification's schema: no network needed.
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_everything_the_issue_asks_for_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(SERVICES) | {"kafka", "redis", "otel-collector", "jaeger", "topics"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(kafka["environment"]["KAFKA_LOG_RETENTION_HOURS"]) >= 365 * 24
    assert "healthcheck" in kafka and "healthcheck" in services["redis"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["topics"]["command"] == ["python", "-m", "tipline.provision"]


def test_services_start_after_what_they_need(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SERVICES:
        needs = services[name]["depends_on"]
        assert needs["kafka"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
        assert needs["topics"]["condition"] == "service_completed_successfully"
        assert needs["kafka-access"]["condition"] == "service_completed_successfully"
        if name in SIGNERS:
            assert needs["keys"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_builds_mounts_and_volumes_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if build := service.get("build"):
            dockerfile = ROOT / build["context"] / build["dockerfile"]
            assert dockerfile.is_file(), name
            # A service's image is its own target of the Dockerfile, tagged with its name.
            assert build["target"] in dockerfile_stages(dockerfile), name
            assert service["image"].startswith(f"tipline/{build['target']}:"), name
            assert build["target"] == name or name not in SERVICES
        for mount in service.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else mount.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"


def test_service_environment_names_settings_that_exist(compose: dict[str, Any]) -> None:
    known = settings_env_names() | OTEL_ENV
    for name in (*SERVICES, "topics"):
        unknown = set(compose["services"][name]["environment"]) - known
        assert not unknown, f"{name}: no setting reads {sorted(unknown)} (typo?)"


def test_collector_pipelines_use_what_is_defined_and_scrape_every_service() -> None:
    config = yaml.safe_load(COLLECTOR.read_text())
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"undefined {kind[:-1]} {component}"
    targets = config["receivers"]["prometheus"]["config"]["scrape_configs"][0]
    hosts = {t.split(":")[0] for t in targets["static_configs"][0]["targets"]}
    assert hosts == set(SERVICES)
