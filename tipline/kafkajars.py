"""The Apache Kafka broker's jars, fetched once through Maven into a cache outside the checkout.

deploy/kafka/pom.xml names the broker (`org.apache.kafka:kafka_2.13`) and a logging backend: the
one place the version lives. `tipline kafka fetch` (`make kafka`) copies them with their
dependencies, the `libs/` of Kafka's binary distribution, into
`~/.cache/tipline/kafka-<version>/libs` (TIPLINE_KAFKA_HOME overrides the folder that holds
`libs/`); `tipline up --kafka apache` fetches them itself the first time, by the same code.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from shared.settings import CONFIG_DIR

POM = CONFIG_DIR.parent / "kafka" / "pom.xml"
LOG_CONFIG = CONFIG_DIR.parent / "kafka" / "log4j2.properties"
_MAVEN = "{http://maven.apache.org/POM/4.0.0}"
COMPLETE = ".complete"  # written once Maven has copied every jar


class Unavailable(RuntimeError):
    """Apache Kafka cannot run here as asked (no Java, no Maven, a workdir of another shape):
    the message says why and what to do."""


def version() -> str:
    found = ET.parse(POM).getroot().find(f"{_MAVEN}properties/{_MAVEN}kafka.version")
    if found is None or not found.text:
        raise ValueError(f"{POM}: no <kafka.version>")
    return found.text.strip()


def home() -> Path:
    """The folder whose `libs/` holds this version's jars."""
    given = os.environ.get("TIPLINE_KAFKA_HOME")
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tipline" / f"kafka-{version()}"


def libs() -> Path | None:
    """The jars, when a complete copy is here."""
    folder = home() / "libs"
    return folder if (folder / COMPLETE).exists() else None


def java() -> str:
    """The `java` to run the broker with (Java 17 or newer): TIPLINE_JAVA, JAVA_HOME's, or the
    one on PATH."""
    given = os.environ.get("TIPLINE_JAVA")
    if given:
        if not Path(given).is_file():
            raise Unavailable(f"TIPLINE_JAVA={given}: no such file")
        return given
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise Unavailable("Apache Kafka needs Java 17 or newer: no `java` on PATH (Debian: "
                      "apt-get install -y openjdk-17-jre-headless), or set TIPLINE_JAVA")
    return found


def missing() -> str | None:
    """Why the broker cannot start here (no Java, no jars), or None."""
    try:
        java()
    except Unavailable as exc:
        return str(exc)
    if libs() is None:
        return f"the Apache Kafka {version()} jars are not in {home()}: run `make kafka`"
    return None


def fetch(quiet: bool = False) -> Path:
    """The jars, fetched through Maven when not here yet; returns their folder."""
    found = libs()
    if found:
        return found
    mvn = shutil.which("mvn")
    if not mvn:
        raise Unavailable("fetching Apache Kafka's jars needs Maven: no `mvn` on PATH (Debian: "
                      "apt-get install -y maven)")
    target = home()
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"libs.partial-{os.getpid()}"  # renamed to libs/ once complete

    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    say(f"fetching Apache Kafka {version()} through Maven into {target} (once)...")
    started = time.monotonic()
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={partial}", "-DincludeScope=runtime"],
        capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)  # a partial download, never data
        raise Unavailable(f"Maven could not fetch Apache Kafka {version()}:\n"
                      f"{(done.stdout + done.stderr)[-3000:]}")
    (partial / COMPLETE).write_text(f"{version()}\n")
    final = target / "libs"
    if (final / COMPLETE).exists():  # another process fetched them meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    else:
        shutil.rmtree(final, ignore_errors=True)  # an incomplete copy of our own making
        partial.rename(final)
    jars = len(list(final.glob("*.jar")))
    say(f"Apache Kafka {version()}: {jars} jars in {final} "
        f"({time.monotonic() - started:.1f} s)")
    return final


def cmd_fetch(args: argparse.Namespace) -> int:
    try:
        fetch()
        java()
    except Unavailable as exc:
        print(f"tipline kafka fetch: {exc}", file=sys.stderr)
        return 2
    print(f"Apache Kafka {version()}: {home() / 'libs'}")
    return 0


def add_commands(sub: Any) -> None:
    kafka = sub.add_parser("kafka", help="the Apache Kafka broker `tipline up --kafka apache` runs")
    kafka_sub = kafka.add_subparsers(dest="kafka_command", required=True)
    fetch_command = kafka_sub.add_parser(
        "fetch", help="fetch its jars through Maven into the cache, once (`make kafka`)")
    fetch_command.set_defaults(func=cmd_fetch)
