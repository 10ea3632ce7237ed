"""The Dockerfiles, checked where no Docker engine runs: what each image holds, and that it is
enough to start the service (the COPY lines are replayed into a directory and the service's
wiring imported from there alone)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, SERVICES

PORTS = {"intake": 8080}  # the others serve their ops endpoint on 9464


def dockerfile(service: str) -> str:
    return (ROOT / "services" / service / "Dockerfile").read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_slim_non_root_with_a_healthcheck(service: str) -> None:
    text = dockerfile(service)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim"] * 2
    (user,) = re.findall(r"^USER (\S+)", text, re.M)
    assert not user.startswith(("0", "root"))
    port = PORTS.get(service, 9464)
    assert f"http://127.0.0.1:{port}/healthz" in text
    assert f'CMD ["python", "-m", "services.{service}"]' in text
    assert f"OTEL_SERVICE_NAME={service}" in text


@pytest.mark.parametrize("service", SERVICES)
def test_holds_only_the_shared_package_and_its_own_service(service: str) -> None:
    sources = re.findall(r"^COPY (?!--from)(\S+) ", dockerfile(service), re.M)
    assert sorted(sources) == sorted([
        "pyproject.toml", "shared/", "services/__init__.py", f"services/{service}/",
        "deploy/config/routing.yaml",
    ])


def image_contents(service: str, root: Path) -> None:
    """Replay the build stage's COPY lines of this service's Dockerfile into `root`."""
    copies = re.findall(r"^COPY (?!--from)(\S+) (\S+)", dockerfile(service), re.M)
    for src_name, dest_name in copies:
        if src_name.startswith("deploy/"):
            continue  # runtime configuration, not code
        src, dest = ROOT / src_name, root / dest_name
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"),
                            dirs_exist_ok=True)
        else:
            dest.mkdir(parents=True, exist_ok=True)  # every file COPY here names a directory
            shutil.copy(src, dest / src.name)


@pytest.fixture(scope="module")
def imports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Each service's wiring imported from its image's contents alone, the five at once."""
    running = {}
    for service in SERVICES:
        root = tmp_path_factory.mktemp(f"image-{service}")
        image_contents(service, root)
        code = (
            "import sys, services, shared\n"
            f"import services.{service}.main\n"
            "assert services.__file__.startswith(sys.argv[1]), services.__file__\n"
            "loaded = {m.split('.')[1] for m in sys.modules if m.startswith('services.')}\n"
            f"assert loaded == {{'{service}'}}, loaded\n"
            "assert 'tipline' not in sys.modules\n"
        )
        running[service] = subprocess.Popen(
            [sys.executable, "-c", code, str(root)], cwd=root, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        )
    results = {}
    for service, process in running.items():
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        results[service] = (process.returncode, err)
    return results


@pytest.mark.parametrize("service", SERVICES)
def test_what_the_image_holds_is_enough_to_build_the_service(
    service: str, imports: dict[str, tuple[int, str]]
) -> None:
    returncode, stderr = imports[service]
    assert returncode == 0, stderr[-2000:]


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", ".tipline"} <= set(ignored)
