"""What a seal covers: topic, key, value and the headers consumers act on; and a seal made before
headers were covered, which still verifies but vouches for no header."""

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from shared.batches import Batch
from shared.seals import HEADER, SEAL_FILE, Seals, Unsealed, covers_headers, ensure_seal_keys
from shared.topics import REPORTS_SUBMITTED

KEY, VALUE = b"r1", b'{"report_id": "r1"}'
TRACE = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


@pytest.fixture
def seals(tmp_path: Path) -> Seals:
    ensure_seal_keys(tmp_path)
    return Seals(tmp_path)


def before_headers(keys_dir: Path) -> str:
    """A seal as intake made them before headers were covered (its format, written out here)."""
    key = base64.b64decode(json.loads((keys_dir / SEAL_FILE).read_text())["keys"]["intake"][0])
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (REPORTS_SUBMITTED.encode(), KEY, VALUE):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return f"intake:{base64.b64encode(mac.digest()).decode()}"


def test_every_covered_header_is_sealed(seals: Seals) -> None:
    seal = seals.seal("intake", REPORTS_SUBMITTED, KEY, VALUE, [TRACE, ("correlation_id", "c")])
    assert covers_headers(seal)
    good = [TRACE, ("correlation_id", b"c"), ("content-type", b"x")]  # not covered: free
    assert seals.check(REPORTS_SUBMITTED, KEY, VALUE, seal, good) == "intake"
    for headers in ([("traceparent", b"00-other"), ("correlation_id", b"c")],  # swapped
                    [("correlation_id", b"c")],  # dropped
                    [TRACE, TRACE, ("correlation_id", b"c")],  # a second one added
                    [TRACE, ("correlation_id", b"c"), ("tracestate", b"x=1")]):  # a new one
        with pytest.raises(Unsealed, match="does not match"):
            seals.check(REPORTS_SUBMITTED, KEY, VALUE, seal, headers)


def test_a_seal_from_before_verifies_but_vouches_for_no_header(
    seals: Seals, tmp_path: Path
) -> None:
    old = before_headers(tmp_path)
    assert not covers_headers(old)
    # Records sealed before an upgrade are still read after it, whatever their headers...
    assert seals.check(REPORTS_SUBMITTED, KEY, VALUE, old, [TRACE]) == "intake"
    with pytest.raises(Unsealed):
        seals.check(REPORTS_SUBMITTED, KEY, VALUE + b" ", old)
    # ... but their trace is not continued: nothing vouches for it.
    headers = [TRACE, (HEADER, old.encode())]
    record = ConsumerRecord(REPORTS_SUBMITTED, 0, 0, 0, 0, KEY, VALUE, None, 2, len(VALUE),
                            headers)
    assert Batch(records=[record]).trace_of(KEY) is None
    sealed = seals.headers("intake", REPORTS_SUBMITTED, KEY, VALUE, [TRACE])
    record.headers = [TRACE, *sealed]
    assert Batch(records=[record]).trace_of(KEY) is not None
    with pytest.raises(Unsealed, match="unknown kind"):
        seals.check(REPORTS_SUBMITTED, KEY, VALUE, old.replace("intake:", "intake:v9:"))
