"""Need to know (shared/audiences.py), a field at a time: what the ESP is told of every fact any
service records, and what an agency finds in each notice. The expectations are written here, by
hand, from what NCMEC tells a provider, not read from the table under test."""

import ast
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.notification.notices import amendment_notice, correction_notice, referral_notice
from services.notification.referrals import Retract
from shared.audiences import (
    AGENCY_SEES,
    CONTACT_SUPPLEMENT,
    Audience,
    Kind,
    Status,
    esp_status,
    esp_timeline,
    for_esp,
    sees_contact,
)
from shared.contracts import (
    PUBLIC_FORM,
    Amendment,
    Change,
    Fact,
    Priority,
    Report,
    ReporterContact,
    ReportSupplemented,
    Supplement,
)
from shared.facts import timeline_facts

ROOT = Path(__file__).resolve().parents[2]

# Every field each kind of fact carries where it is recorded, and whether its ESP may see it.
ESP_MAY_SEE: dict[str, dict[str, bool]] = {
    "opened": {"supersedes": True, "via": True},
    "file uploaded": {f: True for f in ("file_id", "sha256", "md5", "size", "original_name",
                                        "relevance", "duplicate_of")},
    "file described": {"file_id": True, "sha256": True, "original_name": True},
    "submitted": {"via": True, "supersedes": True},
    "finished": {"files": True},
    "retraction requested": {"by": True, "post_finish": True, "reason": True},
    "abandoned": {"reason": True, "by": True},
    "information added by the reporter": {"text": False, "added_at": False},
    "validated": {},
    "rejected": {"reasons": True},
    "duplicate content across reports": {"file_id": True, "sha256": True,
                                         "other_report": True},
    "duplicate content in another ESP's report": {"file_id": False, "sha256": False,
                                                  "other_report": False},
    "supersedes": {"report": True},
    "superseded": {"by_report": True},
    "validated report waits for the analyst's release": {},
    "held by analyst": {"analyst": False, "reason": False},
    "released by analyst": {"analyst": False},
    "supplemented": {f: False for f in ("agencies", "jurisdiction", "priority", "rules_version",
                                        "supplements", "amendments")},
    "supplement added": {f: False for f in ("analyst", "kind", "verified", "source",
                                            "added_at")},
    "amended by analyst": {f: False for f in ("analyst", "path", "reason", "amended_at")},
    "closed as not actionable": {"analyst": False, "reason": False},
    "referral delivered": {"agency": False, "priority": False},
    "referral withheld": {"reason": False},
    "amendment delivered": {"agency": False, "notice_id": False, "version": False},
    "amendment withheld": {"version": False, "reason": False},
    "retracted": {"requested_by": False, "reason": False, "requested_at": False},
    "correction delivered": {"agency": False, "notice_id": False},
    "acknowledged": {"agency": False, "notice_id": False, "kind": False, "late": False},
    "agency outcome": {"agency": False, "outcome": False, "text": False},
    "correction re-sent": {"agency": False, "notice_id": False, "resend": False},
    "amendment re-sent": {"agency": False, "notice_id": False, "resend": False},
    "correction escalated": {"agency": False, "notice_id": False, "resends": False},
    "amendment escalated": {"agency": False, "notice_id": False, "resends": False},
    "available to law enforcement": {},
    "not made available to law enforcement": {},
}
# Kinds the ESP is told of at all, and under which word.
ESP_TOLD_AS = {
    "referral delivered": "available to law enforcement",
    "referral withheld": "not made available to law enforcement",
    **{k: k for k in ("opened", "file uploaded", "file described", "submitted", "finished",
                      "retraction requested", "abandoned", "rejected",
                      "duplicate content across reports", "supersedes", "superseded",
                      "retracted", "available to law enforcement",
                      "not made available to law enforcement")},
}
FIELDS = [(kind, name, seen) for kind, fields in ESP_MAY_SEE.items()
          for name, seen in fields.items()]


def test_every_kind_of_fact_is_listed_here() -> None:
    assert set(ESP_MAY_SEE) == {k.value for k in Kind}


@pytest.mark.parametrize(("kind", "name", "seen"), FIELDS,
                         ids=[f"{k}.{n}" for k, n, _ in FIELDS])
def test_what_the_esp_sees_of_each_field(kind: str, name: str, seen: bool) -> None:
    marker = f"MARKER-{kind}-{name}"
    fact = Fact("e1", kind, None, {name: marker})
    # Where a fact leaves its service for intake...
    sent = [f for record in timeline_facts({"r1": [fact]}, {}) for f in record.facts["r1"]]
    # ... and what intake shows of an entry it keeps (recorded before this model, say).
    shown = esp_timeline([{"at": "2026-01-01T00:00:00+00:00", "what": kind, name: marker}])
    assert (marker in json.dumps([f.detail for f in sent])) is seen
    assert (marker in json.dumps(shown)) is seen
    told = ESP_TOLD_AS.get(kind)
    assert [f.what for f in sent] == [e["what"] for e in shown] == ([told] if told else [])


def test_how_many_agencies_received_it_is_not_the_esps_to_count() -> None:
    facts = [Fact(f"notice-{a}", Kind.REFERRAL_DELIVERED, "referred", {"agency": a})
             for a in ("icac-tx", "us-federal")]
    (record,) = timeline_facts({"r1": facts}, {})
    (told,) = record.facts["r1"]
    assert (told.what, told.status, told.detail) == ("available to law enforcement",
                                                     "referred", {})
    # The same word from another batch is the same entry (its event id).
    assert for_esp("r1", facts[1]) == told
    assert for_esp("r2", facts[1]) != told
    kept = [{"at": f"2026-01-01T00:00:0{i}+00:00", "what": "referral delivered", "agency": a}
            for i, a in enumerate(("icac-tx", "us-federal"))]
    assert esp_timeline(kept) == [{"at": kept[0]["at"], "what": "available to law enforcement"}]


def test_what_intake_shows_of_entries_kept_before_the_model() -> None:
    at = "2026-01-01T00:00:00+00:00"
    old: list[dict[str, object]] = [
        {"at": at, "what": "duplicate content across reports", "file_id": "f",
         "other_report": None, "esp_visible": False},
        {"at": at, "what": "something a later service learned", "secret": "x"},
        {"at": at, "what": "finished", "files": ["f"]}]
    assert esp_timeline(old) == [{"at": at, "what": "finished", "files": ["f"]}]


def test_the_status_the_esp_is_told() -> None:
    told = {s: esp_status(s, open_draft=False) for s in Status}
    assert told == {
        Status.SUBMITTED: "received", Status.VALIDATED: "received", Status.HELD: "received",
        Status.SUPPLEMENTED: "received", Status.REFERRED: "available_to_law_enforcement",
        Status.REJECTED: "rejected", Status.RETRACTED: "retracted",
        Status.CORRECTION_ESCALATED: "retracted",
    }
    assert esp_status(None, open_draft=True) == "open"
    assert esp_status(None, open_draft=False) == "received"


def test_every_service_names_its_facts_by_kind() -> None:
    """A fact recorded under a word of its own (a string) would be one the model never heard
    of: shown to no ESP, and said by nobody to be hidden."""
    literal = []
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            what = (node.args[1] if name == "Fact" and len(node.args) > 1
                    else node.args[2] if name == "record" and len(node.args) > 2 else None)
            if isinstance(what, ast.Constant | ast.JoinedStr):
                literal.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not literal, literal


# --- agencies ----------------------------------------------------------------------------


def supplemented(marker: str) -> ReportSupplemented:
    at = datetime.now(UTC)
    return ReportSupplemented(
        event_id="e", report_id="r1", esp_id="esp-1", report=Report(additional_info=marker),
        agencies=["icac-tx", "icac-ny"], priority=Priority.HIGH, jurisdiction="TX",
        rules_version="v1",
        supplements=[Supplement(supplement_id="s", kind="note", content=marker,
                                source="confidential source", verified=False,
                                analyst_id="analyst-1", added_at=at)],
        amendments=[Amendment(amendment_id="a", path="platform", value="x", reason="why",
                              analyst_id="analyst-1", amended_at=at)])


def test_an_agency_finds_what_it_needs_and_no_other_agency() -> None:
    referral = referral_notice(supplemented("MARKER"), "icac-tx")
    correction = correction_notice("r1", "icac-tx", Retract(
        "2026-01-01T00:00:00+00:00", "esp", "esp-1", "in error"), Priority.HIGH)
    change = Change(amendment=supplemented("x").amendments[0])
    amendment = amendment_notice("r1", "icac-tx", 1, change, Priority.HIGH)
    for notice in (referral, correction, amendment):
        assert set(notice.payload.model_dump()) <= AGENCY_SEES[notice.kind], notice.kind
        assert "icac-ny" not in notice.model_dump_json()  # another agency it went to
    # The report as referred: the ESP's original, analysts' work beside it, labelled.
    payload = referral.payload.model_dump(mode="json")
    assert set(payload) == AGENCY_SEES["referral"]
    assert "MARKER" in json.dumps(payload["report"])
    assert payload["supplements"][0]["label"] == "UNVERIFIED"


# --- a public reporter's contact details ---------------------------------------------------


def test_who_sees_a_public_reporters_contact_details() -> None:
    seen = {(a, shareable): sees_contact(a, shareable=shareable)
            for a in Audience for shareable in (False, True)}
    assert {k for k, v in seen.items() if v} == {
        (Audience.ANALYST, False), (Audience.ANALYST, True), (Audience.AGENCY, True)}


def test_a_public_report_reaches_an_agency_without_its_reporter_unless_shared() -> None:
    contact = ReporterContact(name="MARK-name", email="mark@example.test", phone="+1 555 0100")
    at = datetime.now(UTC)
    event = supplemented("synthetic").model_copy(update={
        "esp_id": PUBLIC_FORM, "source": "public", "supplements": [], "amendments": []})
    plain = referral_notice(event, "icac-tx")
    shown = plain.payload.model_dump()
    assert (shown["source"], shown["esp_id"]) == ("public", None)
    assert "MARK-name" not in plain.model_dump_json()
    shared = Supplement(supplement_id="c", kind=CONTACT_SUPPLEMENT,
                        content=contact.model_dump(exclude_none=True), source="the reporter",
                        verified=False, analyst_id="analyst-1", added_at=at)
    told = referral_notice(event.model_copy(update={"supplements": [shared]}), "icac-tx")
    assert told.payload.model_dump()["supplements"][0]["content"]["name"] == "MARK-name"
    assert set(told.payload.model_dump()) <= AGENCY_SEES["referral"]
