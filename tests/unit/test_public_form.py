"""The public form's pure parts: the limits, the tokens and receipt codes, reading a form."""

from datetime import UTC, datetime, timedelta

from services.intake.publicform import Addition, Filed, read_addition, read_report
from services.intake.receipts import Problem, Purpose, Token, Tokens, code_hash, code_matches
from services.intake.throttle import Refused, Throttle

NOW = datetime(2030, 6, 1, 22, 0, tzinfo=UTC)


def test_an_address_gets_its_share_and_earns_it_back() -> None:
    throttle = Throttle(per_address=3, window_s=60, overall_per_minute=100)
    assert [throttle.take("a", 0.0) for _ in range(3)] == [None] * 3
    refused = throttle.take("a", 0.0)
    assert refused == Refused(retry_after_s=20, everyone=False)  # one back every 20 s
    assert throttle.take("b", 0.0) is None  # another address is served
    assert throttle.take("a", 19.0) is not None
    assert throttle.take("a", 20.0) is None


def test_everyone_together_is_limited_too_and_a_refusal_costs_nothing() -> None:
    throttle = Throttle(per_address=100, window_s=60, overall_per_minute=2)
    assert throttle.take("a", 0.0) is None and throttle.take("b", 0.0) is None
    assert throttle.take("c", 0.0) == Refused(retry_after_s=30, everyone=True)
    # The refusal took nothing from c's own bucket: it has all of it once everyone has room.
    assert all(throttle.take("c", 600.0 + i) is None for i in range(2))


def test_only_so_many_addresses_are_remembered() -> None:
    throttle = Throttle(per_address=1, window_s=3600, overall_per_minute=10**6, addresses=2)
    for address in ("a", "b", "c"):
        assert throttle.take(address, 0.0) is None
    assert throttle.take("a", 0.0) is None  # forgotten, so counted afresh
    assert throttle.take("c", 0.0) is not None


def test_a_token_is_taken_only_in_its_window_for_its_form_and_unaltered() -> None:
    tokens = Tokens(b"k" * 32, min_s=3, max_s=3600)
    token = tokens.issue(Purpose.REPORT, 1000.0)
    assert isinstance(checked := tokens.check(token, Purpose.REPORT, 1003.0), Token)
    assert tokens.check(token, Purpose.REPORT, 1001.0) is Problem.TOO_SOON
    assert tokens.check(token, Purpose.REPORT, 4601.0) is Problem.EXPIRED
    assert tokens.check(token, Purpose.ADD, 1003.0) is Problem.INVALID
    issued, nonce, mac = token.split(".")
    for forged in (f"{int(issued) - 100}.{nonce}.{mac}", f"{issued}.x{nonce}.{mac}",
                   f"{issued}.{nonce}", "", "1.2.3"):
        assert tokens.check(forged, Purpose.REPORT, 1003.0) is Problem.INVALID, forged
    other = Tokens(b"o" * 32, min_s=3, max_s=3600)
    assert other.check(token, Purpose.REPORT, 1003.0) is Problem.INVALID
    assert checked.nonce == nonce


def test_a_receipt_code_is_the_forms_and_is_checked_as_people_type_it() -> None:
    tokens = Tokens(b"k" * 32, min_s=0, max_s=60)
    code = tokens.code("nonce-1")
    assert code == tokens.code("nonce-1") != tokens.code("nonce-2")
    assert len(code.replace("-", "")) == 20 and not set(code) & set("ILOU")
    kept = code_hash(code)
    for typed in (code, code.lower(), code.replace("-", " "), f"  {code.replace('-', '')} ",
                  code.replace("1", "l").replace("0", "O")):
        assert code_matches(typed, kept), typed
    assert not code_matches(tokens.code("nonce-2"), kept)
    assert not code_matches(code[:-1], kept)
    assert code not in kept


def form(**changes: str) -> dict[str, str]:
    return {"incident_type": "Child Sex Trafficking", "incident_date": "2030-05-30",
            "description": "synthetic description", "urls": "", "platform": "",
            "country": "", "us_state": "", "place": "", "contact_name": "",
            "contact_email": "", "contact_phone": "", **changes}


def test_a_form_is_read_into_a_report_and_its_contact_apart() -> None:
    filed = read_report(form(urls=" https://a.example.test/x \n\nhttp://b.example.test",
                             us_state="TX", contact_email="me@example.test"), NOW)
    assert isinstance(filed, Filed)
    assert filed.report.urls == ["https://a.example.test/x", "http://b.example.test"]
    assert (filed.report.location.country, filed.report.location.us_state) == ("US", "TX")
    assert filed.report.incident_at == datetime(2030, 5, 30, tzinfo=UTC)
    assert filed.report.reporter_email is None
    assert filed.contact is not None and filed.contact.email == "me@example.test"
    anonymous = read_report(form(), NOW)
    assert isinstance(anonymous, Filed) and anonymous.contact is None


def test_today_somewhere_ahead_of_utc_is_not_the_future() -> None:
    tomorrow_utc = (NOW + timedelta(hours=3)).date().isoformat()  # already today in Tonga
    filed = read_report(form(incident_date=tomorrow_utc), NOW)
    assert isinstance(filed, Filed) and filed.report.incident_at == NOW
    later = read_report(form(incident_date=(NOW + timedelta(days=2)).date().isoformat()), NOW)
    assert later == {"incident_date": "The date must not be in the future."}


def test_every_problem_is_named_on_its_field_without_quoting_it() -> None:
    errors = read_report(form(incident_type="", incident_date="30/05/2030", description=" ",
                              urls="ftp://x.example.test", country="USA",
                              contact_email="secret-but-wrong", contact_phone="call me"), NOW)
    assert isinstance(errors, dict)
    assert set(errors) == {"incident_type", "incident_date", "description", "urls",
                           "country", "contact_email", "contact_phone"}
    assert "secret-but-wrong" not in str(errors) and "call me" not in str(errors)
    assert errors["incident_type"] == "The kind of exploitation is required."
    assert read_report(form(incident_type="Something else"), NOW) == {
        "incident_type": "The kind of exploitation must be one of the kinds listed."}
    assert read_report(form(description="x" * 3001), NOW) == {
        "description": "The description must be at most 3000 characters."}


def test_an_addition_names_its_report_by_number() -> None:
    added = read_addition({"report_number": "12 34", "code": "c", "text": " t "})
    assert isinstance(added, Addition) and added.text == "t"
    assert read_addition({"report_number": "r-1", "code": "", "text": ""}) == {
        "code": "The secret code is required.", "text": "What you add is required.",
        "report_number": "The report number is the number on your receipt: digits only."}
