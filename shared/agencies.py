"""The agency registry: who can receive notices, read from the routing file."""

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from shared.topics import agency_topic


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

    @property
    def topic(self) -> str:
        return agency_topic(self.id)


def load_agencies(path: Path) -> dict[str, Agency]:
    data = yaml.safe_load(path.read_text())
    agencies = [Agency.model_validate(a) for a in data.get("agencies", [])]
    return {a.id: a for a in agencies}
