"""The agency registry: who can receive notices, read from the routing file.

Each agency may list `verify_keys`: the Ed25519 public keys (base64) its acknowledgements and
outcomes are signed with. A response not signed by one of its agency's keys is refused
(dead-lettered by retraction); an agency without keys cannot acknowledge at all, so its
corrections are re-sent and then escalated.
"""

import base64
import binascii
import logging
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, field_validator

from shared.signing import Verifier, key_id_of
from shared.topics import agency_topic

log = logging.getLogger("tipline.agencies")


class Agency(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    verify_keys: list[str] = []

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        agency_topic(value)  # raises on an id that cannot name a topic
        return value

    @field_validator("verify_keys")
    @classmethod
    def _valid_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                Ed25519PublicKey.from_public_bytes(base64.b64decode(key, validate=True))
            except (ValueError, binascii.Error):
                raise ValueError(f"not a base64 Ed25519 public key: {key[:16]}...") from None
        return keys

    @property
    def topic(self) -> str:
        return agency_topic(self.id)

    def verifier(self) -> Verifier | None:
        """Verifies this agency's signed responses; None when it registered no keys."""
        if not self.verify_keys:
            return None
        return Verifier(keys=[
            {"key_id": key_id_of(Ed25519PublicKey.from_public_bytes(base64.b64decode(k))),
             "public_key": k}
            for k in self.verify_keys
        ])


def load_agencies(path: Path) -> dict[str, Agency]:
    data = yaml.safe_load(path.read_text())
    agencies = [Agency.model_validate(a) for a in data.get("agencies", [])]
    return {a.id: a for a in agencies}


class AgencyRegistry:
    """The registry in force, re-read when its file changes; a bad file leaves it as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self.agencies = load_agencies(path)  # a bad file at start stops the service

    def _stat(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def get(self, agency_id: str) -> Agency | None:
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                self.agencies = load_agencies(self.path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            log.error("agency registry %s refused, the previous one stays: %s", self.path, exc)
        return self.agencies.get(agency_id)
