"""Notice signatures: sign, verify, tamper, rotate with an overlap, retire."""

import json
from datetime import timedelta
from pathlib import Path

import pytest

from services.notification.notices import encoded, referral_notice, signed
from shared.contracts import AgencyNotice, Priority, Report, ReportSupplemented, now
from shared.signing import PUBLIC_FILE, BadSignature, Signer, Verifier, ensure_keys, rotate
from tests.clock import ManualClock


def notice(text: str = "synthetic") -> AgencyNotice:
    return referral_notice(ReportSupplemented(
        event_id="e", report_id="r-1", esp_id="esp", report=Report(additional_info=text),
        agencies=["a"], priority=Priority.HIGH, jurisdiction="TX", rules_version="v"), "a")


def wire(n: AgencyNotice) -> dict[str, object]:
    """What an agency parses off the topic."""
    return dict(json.loads(n.model_dump_json()))


def test_a_signed_notice_verifies_after_the_wire(tmp_path: Path) -> None:
    ensure_keys(tmp_path)
    n = signed(notice(), Signer(tmp_path))
    assert n.signature and n.key_id
    assert Verifier(tmp_path / PUBLIC_FILE).verify(wire(n)) == n.key_id


def test_the_bytes_that_go_out_verify_and_parse_as_the_model(tmp_path: Path) -> None:
    """Notices go out as `encoded` bytes (signed once, never re-encoded): what an agency parses
    off the topic verifies, with unicode text too, and reads as the notice that was signed."""
    ensure_keys(tmp_path)
    original = notice("synthetic text, accents é and ✓")
    body = encoded(original, Signer(tmp_path)).body
    doc = json.loads(body)
    assert Verifier(tmp_path / PUBLIC_FILE).verify(doc) == doc["key_id"]
    assert AgencyNotice.model_validate_json(body).model_dump(exclude={"key_id", "signature"}) == \
        original.model_dump(exclude={"key_id", "signature"})
    assert encoded(original, None).body == original.model_dump_json().encode()


@pytest.mark.parametrize("field,value", [
    ("payload", {"kind": "referral", "note": "altered"}), ("agency_id", "b"), ("priority", 0),
    ("kind", "correction"),
    ("key_id", "0000000000000000"),
])
def test_any_altered_field_is_refused(tmp_path: Path, field: str, value: object) -> None:
    ensure_keys(tmp_path)
    doc = wire(signed(notice(), Signer(tmp_path)))
    doc[field] = value
    with pytest.raises(BadSignature):
        Verifier(tmp_path / PUBLIC_FILE).verify(doc)


def test_unsigned_and_foreign_notices_are_refused(tmp_path: Path) -> None:
    ensure_keys(tmp_path)
    verifier = Verifier(tmp_path / PUBLIC_FILE)
    with pytest.raises(BadSignature, match="not signed"):
        verifier.verify(wire(notice()))
    other = tmp_path / "other"
    ensure_keys(other)
    with pytest.raises(BadSignature, match="unknown key"):
        verifier.verify(wire(signed(notice(), Signer(other))))


def test_rotation_keeps_the_old_key_valid_for_the_overlap_only(tmp_path: Path) -> None:
    first = ensure_keys(tmp_path)
    clock = ManualClock()
    signer, verifier = Signer(tmp_path, clock), Verifier(tmp_path / PUBLIC_FILE)
    before = wire(signed(notice(), signer))
    rotation = rotate(tmp_path, overlap=timedelta(hours=1))
    assert rotation.retiring == first and rotation.active != first
    assert wire(signed(notice(), signer))["key_id"] == first  # looked at once a second
    clock.advance(1.1)
    after = wire(signed(notice(), signer))  # the running signer picks up the new key
    assert after["key_id"] == rotation.active
    assert verifier.verify(before) == first  # inside the overlap
    assert verifier.verify(after) == rotation.active
    with pytest.raises(BadSignature, match="retired"):
        verifier.verify(before, at=now() + timedelta(hours=2))
    assert verifier.verify(after, at=now() + timedelta(days=365)) == rotation.active


def test_a_service_without_keys_stops_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="TIPLINE_KEYS_DIR"):
        Signer(tmp_path / "missing")
