"""The public form's fields, and a sent form read into a report. Pure.

A form is what the browser sends (`application/x-www-form-urlencoded`), as field name -> value.
`read_report` turns it into the report and, apart, the reporter's contact details, or says what
is wrong, field by field, in words a person can act on; the report rules are shared/rules.py's
(the validation service runs them again). An error never quotes what was typed.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from shared.contracts import FieldError, Location, Report, ReporterContact
from shared.rules import MAX_TEXT, check_contact, check_report

US_STATES = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY", "AS", "GU", "MP", "PR", "VI",
)
# Somewhere on Earth it is already tomorrow: a date up to this far ahead of UTC is today there.
_AHEAD = timedelta(hours=14)


@dataclass(frozen=True)
class Field:
    name: str
    label: str  # as the page shows it
    called: str  # in an error message: "<called> is required."
    required: bool = False


REPORT_FIELDS = (
    Field("incident_type", "What kind of exploitation was it?", "The kind of exploitation",
          required=True),
    Field("incident_date", "When did it happen, or when did you see it?", "The date",
          required=True),
    Field("description", "Describe what happened", "The description", required=True),
    Field("urls", "Web addresses (one per line)", "The web addresses"),
    Field("platform", "App, website or service", "The app, website or service"),
    Field("country", "Country", "The country"),
    Field("us_state", "US state", "The US state"),
    Field("place", "Town or place", "The town or place"),
    Field("contact_name", "Your name", "Your name"),
    Field("contact_email", "Your email address", "Your email address"),
    Field("contact_phone", "Your phone number", "Your phone number"),
)
ADD_FIELDS = (
    Field("report_number", "Report number", "The report number", required=True),
    Field("code", "Secret code", "The secret code", required=True),
    Field("text", "What would you like to add?", "What you add", required=True),
)
FIELDS = {f.name: f for f in (*REPORT_FIELDS, *ADD_FIELDS)}
# Where shared/rules.py's reasons point, as the form's fields.
_FIELD_OF = {
    "incidentSummary/incidentType": "incident_type",
    "incidentSummary/incidentDateTime": "incident_date",
    "additionalInfo": "description",
    "incidentSummary/platform": "platform",
    "location/country": "country",
    "location/usState": "us_state",
    "location/place": "place",
    "urls": "urls",
    "contact/name": "contact_name",
    "contact/email": "contact_email",
    "contact/phone": "contact_phone",
}
# What a field may hold, at most (the page says so too, and the body limit bounds the rest).
MAX_LENGTH = {"description": MAX_TEXT, "text": MAX_TEXT, "urls": 20 * 2001, "platform": 256,
              "place": 200, "country": 2, "contact_name": 200, "contact_email": 255,
              "contact_phone": 40, "report_number": 40, "code": 40}

Errors = dict[str, str]  # field name -> what is wrong with it


@dataclass(frozen=True)
class Filed:
    report: Report
    contact: ReporterContact | None


def _given(form: Mapping[str, str], name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


def _missing(form: Mapping[str, str], fields: tuple[Field, ...]) -> Errors:
    errors: Errors = {}
    for field in fields:
        value = form.get(field.name, "")
        if field.required and not value.strip():
            errors[field.name] = f"{field.called} is required."
        elif len(value) > MAX_LENGTH.get(field.name, MAX_TEXT):
            errors[field.name] = (f"{field.called} must be at most "
                                  f"{MAX_LENGTH.get(field.name, MAX_TEXT)} characters.")
    return errors


def _incident_at(text: str, now: datetime) -> datetime | str:
    """The incident's time from its date: the day's start in UTC, or now for a day that is
    today somewhere ahead of UTC; else why not."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return "must be a date, such as 2026-03-15."
    if day > (now + _AHEAD).date():
        return "must not be in the future."
    return min(datetime.combine(day, time(), UTC), now)


def read_report(form: Mapping[str, str], now: datetime) -> Filed | Errors:
    """The report (and the reporter's contact details, if any) the form describes, or what is
    wrong with it, every field at once."""
    errors = _missing(form, REPORT_FIELDS)
    incident_at = None
    if "incident_date" not in errors and (text := _given(form, "incident_date")):
        when = _incident_at(text, now)
        if isinstance(when, str):
            errors["incident_date"] = f"{FIELDS['incident_date'].called} {when}"
        else:
            incident_at = when
    country, us_state = _given(form, "country"), _given(form, "us_state")
    report = Report(
        incident_type=_given(form, "incident_type"),
        incident_at=incident_at,
        platform=_given(form, "platform"),
        additional_info=form.get("description", "").strip(),
        urls=[line.strip() for line in form.get("urls", "").splitlines() if line.strip()],
        location=Location(country=(country.upper() if country else "US" if us_state else None),
                          us_state=us_state, place=_given(form, "place")),
    )
    contact = ReporterContact(name=_given(form, "contact_name"),
                              email=_given(form, "contact_email"),
                              phone=_given(form, "contact_phone"))
    given = contact if contact.model_dump(exclude_none=True) else None
    found = check_report(report, at=now, source="public") + (
        check_contact(given) if given else [])
    for name, error in _explained(found).items():
        errors.setdefault(name, error)  # the form's own word on a field first
    return errors or Filed(report, given)


def _explained(found: list[FieldError]) -> Errors:
    """shared/rules.py's reasons, each on the field it concerns, in the form's words."""
    errors: Errors = {}
    for error in found:
        name = _FIELD_OF.get(error.path, "description")
        if name == "incident_type" and error.reason.startswith("must be one of"):
            reason = "must be one of the kinds listed."
        else:
            reason = error.reason.rstrip(".") + "."
        errors.setdefault(name, f"{FIELDS[name].called} {reason}")
    return errors


@dataclass(frozen=True)
class Addition:
    report_id: str
    code: str
    text: str


def read_addition(form: Mapping[str, str]) -> Addition | Errors:
    """What a reporter adds, with the receipt it is for, or what is wrong, by field."""
    errors = _missing(form, ADD_FIELDS)
    number = "".join(form.get("report_number", "").split())
    if "report_number" not in errors and not number.isdigit():
        errors["report_number"] = "The report number is the number on your receipt: digits only."
    if errors:
        return errors
    return Addition(number, form["code"], form["text"].strip())
