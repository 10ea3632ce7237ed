"""Signed notices: Ed25519 keys with ids, rotation with an overlap, signing and verifying.

tipline signs every notice with its active private key; an agency verifies with the public
keyring tipline publishes. Rotating makes a new key active and keeps the old one verifiable until
`not_after` (now + overlap), so notices signed just before a rotation still verify.

Files (in the keys directory; private keys never leave it and are never committed):
- signing-keys.json: {"active": key_id, "keys": {key_id: private key, base64}} (mode 0600)
- public-keys.json: {"keys": [{"key_id", "public_key", "created_at", "not_after"}]}
Both are re-read when they change on disk, so a rotation needs no restart.
"""

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from shared.clock import Clock
from shared.contracts import now
from shared.keyfiles import Watched, write_json

SIGNING_FILE = "signing-keys.json"
PUBLIC_FILE = "public-keys.json"
UNSIGNED = ("signature",)  # the fields a signature does not cover


class BadSignature(Exception):
    """A notice whose signature is missing, from an unknown or retired key, or does not match."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_of(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the document without its signature, keys sorted."""
    body = {k: v for k, v in document.items() if k not in UNSIGNED}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signer:
    """Signs documents with the active key of a keys directory."""

    def __init__(self, keys_dir: Path, clock: Clock = time.monotonic) -> None:
        self._file = Watched(keys_dir / SIGNING_FILE, clock=clock)  # when to look at it again
        self._keys: dict[str, Ed25519PrivateKey] = {}
        if not self._file.path.exists():  # fail at start, not at the first notice
            raise FileNotFoundError(
                f"no signing keys at {self._file.path}: run `tipline keys init` "
                "or set TIPLINE_KEYS_DIR"
            )
        self._active()

    def _active(self) -> tuple[str, Ed25519PrivateKey]:
        data = self._file.fresh()
        key_id = data["active"]
        if key_id not in self._keys:
            raw = base64.b64decode(data["keys"][key_id])
            self._keys[key_id] = Ed25519PrivateKey.from_private_bytes(raw)
        return key_id, self._keys[key_id]

    def sign(self, document: dict[str, Any]) -> dict[str, Any]:
        """The document with `key_id` and `signature` set."""
        return dict(json.loads(self.sign_json(document)))

    def sign_json(self, document: dict[str, Any]) -> bytes:
        """The signed document as JSON bytes, ready to send: its canonical form (with `key_id`)
        and then its `signature` (so a notice is encoded once, not again after signing)."""
        key_id, key = self._active()
        body = canonical({**document, "key_id": key_id})
        signature = _b64(key.sign(body)).encode()
        return body[:-1] + (b',"signature":"' if len(body) > 2 else b'"signature":"') + \
            signature + b'"}'


class Verifier:
    """Verifies documents against a public keyring (a file, or keys given directly)."""

    def __init__(self, public_file: Path | None = None, keys: list[dict[str, Any]] | None = None):
        self._file = Watched(public_file) if public_file else None
        self._fixed = keys or []

    def _keyring(self) -> dict[str, dict[str, Any]]:
        listed = self._file.fresh().get("keys", []) if self._file else self._fixed
        return {k["key_id"]: k for k in listed}

    def verify(self, document: dict[str, Any], at: datetime | None = None) -> str:
        """The key id that signed `document`; raises BadSignature otherwise."""
        key_id, signature = document.get("key_id"), document.get("signature")
        if not key_id or not signature:
            raise BadSignature("not signed")
        entry = self._keyring().get(str(key_id))
        if entry is None:
            raise BadSignature(f"unknown key {key_id}")
        not_after = entry.get("not_after")
        if not_after and (at or now()) > datetime.fromisoformat(not_after):
            raise BadSignature(f"key {key_id} retired at {not_after}")
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"]))
        try:
            public.verify(base64.b64decode(str(signature)), canonical(document))
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature(f"signature does not match (key {key_id})") from exc
        return str(key_id)


@dataclass(frozen=True)
class Rotation:
    active: str
    retiring: str | None
    not_after: datetime | None


def rotate(keys_dir: Path, overlap: timedelta = timedelta(days=7)) -> Rotation:
    """Make a new active key; the previous one stays verifiable for `overlap`."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    signing_path, public_path = keys_dir / SIGNING_FILE, keys_dir / PUBLIC_FILE
    signing = json.loads(signing_path.read_text()) if signing_path.exists() else {"keys": {}}
    public = json.loads(public_path.read_text()) if public_path.exists() else {"keys": []}

    key = Ed25519PrivateKey.generate()
    key_id = key_id_of(key.public_key())
    retiring, not_after = signing.get("active"), None
    if retiring:
        not_after = now() + overlap
        for entry in public["keys"]:
            if entry["key_id"] == retiring and not entry.get("not_after"):
                entry["not_after"] = not_after.isoformat()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    signing["keys"][key_id] = _b64(raw)
    signing["active"] = key_id
    public["keys"].append({"key_id": key_id, "public_key": _b64(_raw_public(key.public_key())),
                           "created_at": now().isoformat(), "not_after": None})
    # Public first: a verifier must know a key before anything is signed with it.
    write_json(public_path, public, 0o644)
    write_json(signing_path, signing, 0o600)
    return Rotation(key_id, retiring, not_after)


def ensure_keys(keys_dir: Path) -> str:
    """The active key id, generating what a deployment's keys directory lacks (dev stacks): a
    first notice-signing key, and each service's seal key (shared/seals.py)."""
    from shared.seals import ensure_seal_keys  # seals builds on this module

    ensure_seal_keys(keys_dir)
    path = keys_dir / SIGNING_FILE
    if path.exists():
        return str(json.loads(path.read_text())["active"])
    return rotate(keys_dir).active
