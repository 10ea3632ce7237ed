"""Generated documents match the code: AsyncAPI, OpenAPI and the routing ConfigMap."""

import json

import jsonschema
import yaml

from shared.agencies import load_agencies
from shared.settings import Settings
from shared.topics import AGENCY_PREFIX, agency_of_topic
from shared.topology import topic_names
from tests.deploy.conftest import ROOT
from tipline import docs


def test_committed_documents_match_the_code() -> None:
    stale = docs.stale()
    assert not stale, (
        f"out of date: {', '.join(map(str, stale))}. Regenerate with `tipline docs` "
        "(or `.venv/bin/python -m tipline.cli docs`) and commit the result."
    )


def test_asyncapi_documents_every_topic() -> None:
    document = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    addresses = {c["address"] for c in document["channels"].values()}
    agencies = load_agencies(Settings().tipline_routing_file)
    for topic in topic_names(agencies):
        name = AGENCY_PREFIX + "{agency_id}" if agency_of_topic(topic) else topic
        assert name in addresses, f"{topic} is not in docs/asyncapi.yaml"


def test_each_message_has_a_schema() -> None:
    document = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    for name, message in document["components"]["messages"].items():
        assert message.get("payload"), name


def test_asyncapi_document_is_valid_asyncapi_3() -> None:
    schema = json.loads((ROOT / "tests/deploy/schemas/asyncapi-3.0.0.json").read_text())
    document = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message[:200]}"
              for e in validator.iter_errors(document)]
    assert not errors, "\n".join(errors[:10])
