"""A certificate authority on loopback: the CA a local stack's brokers are signed by (made once,
kept in the workdir) and the tests' throwaway ones. PEM files only: Apache Kafka reads them
directly (`ssl.keystore.type=PEM`), as do aiokafka, librdkafka and stunnel."""

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the server's certificate
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost
    key: Path  # its private key (PKCS#8, unencrypted, mode 0600)
    other_ca: Path  # a CA that signed nothing here: a client trusting only it must refuse


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: Path, *, name: str = "tipline test CA", days: int = 1) -> Pki:
    """A CA, a server certificate it signs (SAN 127.0.0.1 and localhost, for client and server
    use: brokers talk to each other with it) and another CA, each valid for `days`."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_cert = _ca(name, days)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(LOOPBACK)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _, other = _ca("some other CA", days)
    pki = Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key",
              directory / "other-ca.crt")
    pki.ca.write_bytes(ca_cert.public_bytes(PEM))
    pki.cert.write_bytes(cert.public_bytes(PEM))
    _private(pki.key, key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    pki.other_ca.write_bytes(other.public_bytes(PEM))
    return pki


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)
