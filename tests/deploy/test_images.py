"""The Dockerfile, checked where no Docker engine runs: one target a service, each built on the
common stages and adding only its own code, settings, ports and command; what each service's
image holds, and that it is enough for the service (the COPY lines are replayed into a
directory, and every import of tipline's own packages in it, lazy ones too, must resolve there).
"""

import ast
import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    OTEL_ENV,
    ROOT,
    SERVICES,
    Stage,
    dockerfile_stages,
    settings_env_names,
    stage_chain,
)

BASE = "python:3.11-slim"
VENV = "/opt/tipline"  # the virtual environment the build stage makes, copied whole
SITE = f"{VENV}/lib/python{BASE.split(':')[1].split('-')[0]}/site-packages/"
OPS_PORT = 9464  # every service's health and metrics, intake's too (its 8080 is the ESP API)
INTERPRETER = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
# The services that use the notification context (services/notification/).
NOTIFYING = frozenset({"referral", "retraction"})


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return dockerfile_stages()


def image(stages: dict[str, Stage], service: str) -> list[tuple[str, str]]:
    """The instructions a service's image is made of (its target's and every stage below)."""
    return [i for stage in stage_chain(stages, service) for i in stage.instructions]


def copies(stages: dict[str, Stage], target: str) -> list[tuple[str, str, str]]:
    """(stage, source, destination) of every COPY from the build context that can reach an
    image of `target`: its own stages' and, for each COPY --from, that stage's."""
    found = []
    for stage in stage_chain(stages, target):
        for keyword, args in stage.instructions:
            if keyword != "COPY":
                continue
            words = args.split()
            source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            if source is not None:
                assert source in stages, f"COPY --from an image ({source}), not a stage"
                found += copies(stages, source)
            else:
                src, dest = [w for w in words if not w.startswith("--")]
                found.append((stage.name, src, dest))
    return found


def env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for word in shlex.split(args):
                name, sep, value = word.partition("=")
                assert sep, f"ENV {args}: write NAME=value"
                out[name] = value
    return out


def last(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in instructions if k == keyword]
    assert found, f"no {keyword}"
    return found[-1]


def test_one_target_a_service_and_nothing_common_written_twice(
    stages: dict[str, Stage],
) -> None:
    assert set(SERVICES) <= set(stages)
    for service in SERVICES:
        chain = stage_chain(stages, service)
        shared_code = ["notifying"] if service in NOTIFYING else []
        assert [s.name for s in chain] == ["runtime", *shared_code, service]
        # Between the runtime and a service's target only code another service uses too;
        # the target holds only what is its own: the common build is written once.
        for stage in chain[1:-1]:
            assert {k for k, _ in stage.instructions} == {"COPY"}, stage.name
        assert {k for k, _ in chain[-1].instructions} <= {"COPY", "ENV", "EXPOSE", "CMD"}
    # Without --target the last stage is built: it must not be some service's image.
    final = list(stages.values())[-1]
    assert final.name not in SERVICES
    assert final.instructions[-1][0] == "RUN" and "exit 1" in final.instructions[-1][1]


@pytest.mark.parametrize("service", SERVICES)
def test_slim_non_root_with_a_healthcheck(stages: dict[str, Stage], service: str) -> None:
    bases = {stage_chain(stages, s)[0].base for s in stages}
    assert bases == {BASE}
    built = image(stages, service)
    user = last(built, "USER")
    assert not user.startswith(("0", "root")), user
    healthcheck = last(built, "HEALTHCHECK")
    assert " CMD " in f" {healthcheck} " and f"http://127.0.0.1:{OPS_PORT}/healthz" in healthcheck
    assert last(built, "CMD") == f'["python", "-m", "services.{service}"]'
    settings = env(built)
    assert settings["OTEL_SERVICE_NAME"] == service
    assert settings["TIPLINE_OPS_PORT"] == str(OPS_PORT)
    assert settings["PATH"].startswith(f"{VENV}/bin:")  # `python` is the environment's


@pytest.mark.parametrize("service", SERVICES)
def test_exposes_the_ports_it_listens_on_and_sets_only_settings_that_exist(
    stages: dict[str, Stage], service: str
) -> None:
    built = image(stages, service)
    settings = env(built)
    exposed = {int(p) for k, args in built if k == "EXPOSE" for p in args.split()}
    listens = {int(v) for name, v in settings.items() if name.endswith("_PORT")}
    assert exposed == listens and OPS_PORT in exposed
    unknown = set(settings) - INTERPRETER - settings_env_names() - OTEL_ENV
    assert not unknown, f"{service}: no setting reads {sorted(unknown)} (typo?)"


@pytest.mark.parametrize("service", SERVICES)
def test_holds_only_the_shared_package_and_its_own_service(
    stages: dict[str, Stage], service: str
) -> None:
    sources = [src for _, src, _ in copies(stages, service)]
    context = ["services/notification/"] if service in NOTIFYING else []
    assert sorted(sources) == sorted([
        "pyproject.toml", "shared/", "services/__init__.py", f"services/{service}/",
        "deploy/config/routing.yaml", *context,
    ])


def installed(stages: dict[str, Stage], service: str, site: Path) -> None:
    """Replay what ends up in the image's site-packages into `site`: the build stage's COPY
    lines into its working directory, what `pip install .` takes from there (the packages),
    then the COPY lines into site-packages."""
    build = stages["build"]
    assert last(build.instructions, "WORKDIR") == "/src"
    run = last(build.instructions, "RUN")
    assert f"python -m venv {VENV}" in run and f"{VENV}/bin/pip install ." in run
    runtime = image(stages, service)
    assert ("COPY", f"--from=build {VENV} {VENV}") in runtime
    src = site.parent / "src"
    placed = copies(stages, service)
    for src_name, dest_name in [(s, d) for stage, s, d in placed if stage == "build"]:
        copy(ROOT / src_name, src / dest_name)
    for package in src.iterdir():  # pip install . (pyproject: shared*, services*, tipline*)
        if (package / "__init__.py").is_file():
            copy(package, site / package.name)
    for src_name, dest_name in [(s, d) for stage, s, d in placed if stage != "build"]:
        if src_name.startswith("deploy/"):
            continue  # runtime configuration, not code
        assert dest_name.startswith(SITE), (src_name, dest_name)
        copy(ROOT / src_name, site / dest_name.removeprefix(SITE))


def copy(source: Path, dest: Path) -> None:
    """As COPY does: a folder's contents into `dest`, a file into the folder `dest`."""
    if source.is_dir():
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True)
    else:
        dest.mkdir(parents=True, exist_ok=True)  # every file COPY here names a directory
        shutil.copy(source, dest / source.name)


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
def test_what_the_image_holds_is_enough_to_run_the_service(
    stages: dict[str, Stage], service: str, tmp_path: Path
) -> None:
    site = tmp_path / "site-packages"
    installed(stages, service, site)
    assert (site / "services" / service / "__main__.py").is_file()
    packages = {p.name for p in (site / "services").iterdir() if p.is_dir()}
    assert packages == {service, *(["notification"] if service in NOTIFYING else [])}
    missing = sorted(f"{path}: {name}" for path, names in first_party_imports(site).items()
                     for name in names if not resolves(site, name))
    assert not missing, "imports the image does not hold:\n" + "\n".join(missing)


def test_dockerignore_keeps_the_build_context_small_and_what_the_images_take() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", "tests", ".tipline"} <= set(ignored)
    prefixes = [p.rstrip("/") for p in ignored if "*" not in p]
    stages = dockerfile_stages()
    for service in SERVICES:
        for _, src, _ in copies(stages, service):
            src = src.rstrip("/")
            assert not [p for p in prefixes if src == p or src.startswith(f"{p}/")], src


def test_the_topics_job_holds_the_job_and_what_it_imports_and_no_service(
    stages: dict[str, Stage], tmp_path: Path
) -> None:
    assert [s.name for s in stage_chain(stages, "topics")] == ["runtime", "topics"]
    site = tmp_path / "site-packages"
    installed(stages, "topics", site)
    assert (site / "tipline" / "provision.py").is_file()
    assert not [p for p in (site / "services").iterdir() if p.is_dir()]
    missing = sorted(f"{path}: {name}" for path, names in first_party_imports(site).items()
                     for name in names if not resolves(site, name))
    assert not missing, "imports the image does not hold:\n" + "\n".join(missing)
    assert last(image(stages, "topics"), "CMD") == '["python", "-m", "tipline.provision"]'


def test_make_images_builds_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (listed,) = re.findall(r"^IMAGES :?= (.+)$", makefile, re.M)
    assert tuple(listed.split()) == (*SERVICES, "topics")
    assert "docker build --target $$service" in makefile
