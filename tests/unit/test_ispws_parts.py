"""Small pure parts of /ispws: answers, credentials, the abandonment deadline, the file sink."""

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.intake.abandonment import abandon_command
from services.intake.answers import Answer, Code, Done, render, wants_json
from services.intake.drafts import abandoned_after
from services.intake.esps import basic_credentials, hash_password, password_matches
from services.intake.files import FileStore, Sink, UploadTooLarge
from services.intake.ids import EPOCH_MS, ReportIds, is_report_id
from shared.contracts import FieldError


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
    day, hour = 24 * 3600.0, 3600.0
    opened = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    late = opened + (23 * 60 + 30) * 60
    assert abandoned_after(opened, late, day, hour) == late + hour
    assert abandoned_after(opened, opened + hour, day, hour) == opened + day
    command = abandon_command("1")
    assert (command.requested_by, command.reason) == ("system", "abandoned")
    assert command.command_id == abandon_command("1").command_id


def test_finish_errors_are_report_done_responses() -> None:
    refused = render(Answer(Code.ALREADY_FINISHED, report_id="42", done=True), None)
    assert refused.status_code == 409
    assert bytes(refused.body).startswith(b"<?xml") and b"<reportDoneResponse>" in refused.body
    assert b"<responseCode>5102</responseCode><reportId>42</reportId><files/>" in refused.body
    assert b"responseDescription" not in refused.body  # not in the schema's element
    assert refused.headers["Tipline-Response-Description"] == "Report already finished"
    unknown = render(Answer(Code.REPORT_DOES_NOT_EXIST, report_id="not-an-id", done=True), None)
    assert b"<reportId>0</reportId>" in unknown.body
    as_json = render(Answer(Code.ALREADY_FINISHED, report_id="42", done=True), "application/json")
    assert b'"responseDescription": "Report already finished"' in as_json.body


def test_report_ids_are_time_ordered_unique_and_longs() -> None:
    ids = ReportIds(node=3)
    now = EPOCH_MS + 10_000
    made = [ids.next(now_ms=now) for _ in range(5000)]  # more than a millisecond's sequence
    made.append(ids.next(now_ms=now - 5_000))  # the clock stepped back
    assert len(set(made)) == len(made) and made == sorted(made, key=int)
    assert all(is_report_id(i) for i in made)
    later = ReportIds(node=3).next(now_ms=now + 60_000)  # a new process, after Redis lost all
    assert int(later) > int(made[-1])
    other = ReportIds(node=4).next(now_ms=now)
    assert other not in made
    assert not is_report_id(str(2**63)) and not is_report_id("12a") and not is_report_id("")


def test_sink_hashes_on_the_way_in_and_stores_by_content(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    sink = Sink(store, limit=10)
    sink.write(b"hello")
    received = sink.close("hello.txt")
    assert received.tmp.parent == tmp_path / "tmp"
    stored = store.keep(received)
    assert not received.tmp.exists()
    assert stored.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert stored.md5 == hashlib.md5(b"hello").hexdigest()
    assert stored.path == tmp_path / stored.sha256[:2] / stored.sha256
    big = Sink(store, limit=4)
    with pytest.raises(UploadTooLarge):
        big.write(b"hello")
    big.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
