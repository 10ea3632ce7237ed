"""The Dockerfiles, checked where no Docker engine runs: what each image holds, and that it is
enough for the service (the COPY lines are replayed into a directory, and every import of
tipline's own packages in it, lazy ones too, must resolve there)."""

import ast
import re
import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, SERVICES

OPS_PORT = 9464  # every service's health and metrics, intake's too (its 8080 is the ESP API)


def dockerfile(service: str) -> str:
    return (ROOT / "services" / service / "Dockerfile").read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_slim_non_root_with_a_healthcheck(service: str) -> None:
    text = dockerfile(service)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim"] * 2
    (user,) = re.findall(r"^USER (\S+)", text, re.M)
    assert not user.startswith(("0", "root"))
    assert f"http://127.0.0.1:{OPS_PORT}/healthz" in text
    assert f'CMD ["python", "-m", "services.{service}"]' in text
    assert f"OTEL_SERVICE_NAME={service}" in text


# The services that use the notification context (services/notification/).
NOTIFYING = frozenset({"referral", "retraction"})


@pytest.mark.parametrize("service", SERVICES)
def test_holds_only_the_shared_package_and_its_own_service(service: str) -> None:
    sources = re.findall(r"^COPY (?!--from)(\S+) ", dockerfile(service), re.M)
    context = ["services/notification/"] if service in NOTIFYING else []
    assert sorted(sources) == sorted([
        "pyproject.toml", "shared/", "services/__init__.py", f"services/{service}/",
        "deploy/config/routing.yaml", *context,
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


def first_party_imports(root: Path) -> dict[str, set[str]]:
    """Every import of tipline's own packages in the tree, file by file (lazy ones too)."""
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        found[str(path.relative_to(root))] = {
            n for n in names if n.split(".")[0] in ("shared", "services", "tipline")}
    return found


def resolves(root: Path, module: str) -> bool:
    """A module (or a name imported from one) that the tree holds."""
    parts = module.split(".")
    for n in (len(parts), len(parts) - 1):
        base = root.joinpath(*parts[:n])
        if n and (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
            return True
    return False


@pytest.mark.parametrize("service", SERVICES)
def test_what_the_image_holds_is_enough_to_build_the_service(
    service: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    image_contents(service, root)
    assert (root / "services" / service / "__main__.py").is_file()
    missing = sorted(f"{path}: {name}" for path, names in first_party_imports(root).items()
                     for name in names if not resolves(root, name))
    assert not missing, "imports the image does not hold:\n" + "\n".join(missing)


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", ".tipline"} <= set(ignored)
