"""Small pure parts of /ispws: answers, credentials, the abandonment deadline, the file sink."""

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.intake.answers import Answer, Code, Done, render, wants_json
from services.intake.esps import basic_credentials, hash_password, password_matches
from services.intake.files import FileStore, Sink, UploadTooLarge
from services.validation.abandonment import abandon_command, deadline_of
from shared.contracts import FieldError, ReportDraftChanged


def test_answers_in_xml_and_json() -> None:
    answer = Answer(Code.VALIDATION_FAILED, report_id="7", errors=[
        FieldError(path="incidentSummary", reason="bad", line=3, column=5)])
    xml = render(answer, None)
    assert xml.status_code == 400 and xml.media_type == "application/xml"
    assert b"<responseCode>4100</responseCode>" in xml.body
    assert b"[3,5] incidentSummary - bad" in xml.body
    body = render(answer, "application/json").body
    assert b'"reportId": 7' in body and b'"errors"' in body
    done = render(Done("7", []), None).body
    assert b"<files/>" in done and b"responseDescription" not in done
    assert render(Answer(Code.AUTHENTICATION_REQUIRED), None).headers["WWW-Authenticate"]


@pytest.mark.parametrize(("accept", "json"), [
    (None, False), ("*/*", False), ("application/json", True),
    ("application/xml, application/json", False), ("application/json;q=1, text/xml", True),
])
def test_json_only_when_preferred(accept: str | None, json: bool) -> None:
    assert wants_json(accept) is json


def test_passwords_are_salted_hashes() -> None:
    stored = hash_password("s3cret", iterations=1000)
    assert "s3cret" not in stored and stored != hash_password("s3cret", iterations=1000)
    assert password_matches("s3cret", stored) and not password_matches("other", stored)
    assert not password_matches("s3cret", "garbage")


def test_basic_credentials() -> None:
    token = base64.b64encode(b"esp-a:pa:ss").decode()
    assert basic_credentials(f"Basic {token}") == ("esp-a", "pa:ss")
    for bad in (None, "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        assert basic_credentials(bad) is None


def test_deadline_is_the_later_of_the_two_windows() -> None:
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    late = opened + timedelta(hours=23, minutes=30)
    event = ReportDraftChanged(event_id="e", report_id="1", esp_id="x", change="file uploaded",
                               opened_at=opened, occurred_at=late)
    day, hour = 24 * 3600.0, 3600.0
    assert deadline_of(event, day, hour) == (opened + timedelta(hours=24, minutes=30)).timestamp()
    early = event.model_copy(update={"occurred_at": opened + timedelta(hours=1)})
    assert deadline_of(early, day, hour) == (opened + timedelta(hours=24)).timestamp()
    command = abandon_command("1")
    assert (command.requested_by, command.reason) == ("system", "abandoned")
    assert command.command_id == abandon_command("1").command_id


def test_sink_hashes_on_the_way_in_and_stores_by_content(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    sink = Sink(store, limit=10)
    sink.write(b"hello")
    stored = sink.commit()
    assert stored.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert stored.md5 == hashlib.md5(b"hello").hexdigest()
    assert stored.path == tmp_path / stored.sha256[:2] / stored.sha256
    big = Sink(store, limit=4)
    with pytest.raises(UploadTooLarge):
        big.write(b"hello")
    big.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
