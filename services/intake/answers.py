"""The answers the ESPs' doors give: CyberTipline response codes, their HTTP statuses, and XML or
JSON bodies; and what each refusal of the core (services/intake/outcomes.py) and of a login
(services/intake/login.py) is in those codes, one table for `/ispws` and `/v1`."""

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, assert_never

from fastapi.responses import Response
from lxml import etree

from services.intake.ids import is_report_id
from services.intake.login import LoginFailed, Why
from services.intake.outcomes import (
    FileAdded,
    FileDescribed,
    Finished,
    Opened,
    Reason,
    Refused,
    RetractionRequested,
)
from shared.contracts import FieldError


class Code(IntEnum):
    SUCCESS = 0
    SERVER_ERROR = 1000
    AUTHENTICATION_REQUIRED = 2000
    NOT_AUTHORIZED = 3000
    INVALID_REQUEST = 4000
    VALIDATION_FAILED = 4100
    MALFORMED_XML = 4110
    MALFORMED_FILE = 4200
    REPORT_DOES_NOT_EXIST = 5001
    FILE_DOES_NOT_EXIST = 5002
    ALREADY_RETRACTED = 5101
    ALREADY_FINISHED = 5102
    # tipline's own: the report was not finished in time and was retracted as abandoned.
    ABANDONED = 5103


DESCRIPTIONS = {
    Code.SUCCESS: "Success",
    Code.SERVER_ERROR: "Server error",
    Code.AUTHENTICATION_REQUIRED: "Authentication required",
    Code.NOT_AUTHORIZED: "User is not authorized to perform this action",
    Code.INVALID_REQUEST: "Invalid request",
    Code.VALIDATION_FAILED: "Validation failed",
    Code.MALFORMED_XML: "Malformed XML submittal",
    Code.MALFORMED_FILE: "Malformed file submittal",
    Code.REPORT_DOES_NOT_EXIST: "Report does not exist",
    Code.FILE_DOES_NOT_EXIST: "File does not exist",
    Code.ALREADY_RETRACTED: "Report already retracted",
    Code.ALREADY_FINISHED: "Report already finished",
    Code.ABANDONED: "Report abandoned: not finished within the abandonment period, so retracted",
}

HTTP_STATUS = {
    Code.SUCCESS: 200,
    Code.SERVER_ERROR: 500,
    Code.AUTHENTICATION_REQUIRED: 401,
    Code.NOT_AUTHORIZED: 403,
    Code.INVALID_REQUEST: 400,
    Code.VALIDATION_FAILED: 400,
    Code.MALFORMED_XML: 400,
    Code.MALFORMED_FILE: 400,
    Code.REPORT_DOES_NOT_EXIST: 404,
    Code.FILE_DOES_NOT_EXIST: 404,
    Code.ALREADY_RETRACTED: 409,
    Code.ALREADY_FINISHED: 409,
    Code.ABANDONED: 409,
}


@dataclass
class Answer(Exception):
    """A <reportResponse>; raised anywhere in a route to answer at once."""

    code: Code
    detail: str = ""
    report_id: str | None = None
    file_id: str | None = None
    hash: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    http_status: int | None = None
    # The answer to /finish: the schema's <reportDoneResponse>, carrying this code.
    done: bool = False
    retry_after_s: int | None = None

    @property
    def description(self) -> str:
        text = DESCRIPTIONS[self.code]
        if self.detail and self.code is Code.SUCCESS:
            text = self.detail  # as /status: "Remote User : {name}, Remote Ip : {ip}"
        elif self.detail:
            text = f"{text}: {self.detail}"
        for e in self.errors:
            where = f"[{e.line},{e.column}] " if e.line is not None else ""
            text += f"\n{where}{e.path} - {e.reason}"
        return text

    @property
    def status(self) -> int:
        return self.http_status or HTTP_STATUS[self.code]

    def data(self) -> dict[str, Any]:
        if self.done:
            report_id = self.report_id or ""
            return {"reportDoneResponse": {
                "responseCode": int(self.code),
                "reportId": int(report_id) if is_report_id(report_id) else 0,
                "files": {"fileId": []},
                "responseDescription": self.description,  # JSON only: not in the schema
            }}
        out: dict[str, Any] = {
            "responseCode": int(self.code),
            "responseDescription": self.description,
        }
        for key, value in (("reportId", self.report_id), ("fileId", self.file_id),
                           ("hash", self.hash)):
            if value is not None:
                out[key] = int(value) if key == "reportId" and value.isdigit() else value
        if self.errors:  # a tipline extension: the same errors, one field each
            out["errors"] = [e.model_dump(exclude_none=True) for e in self.errors]
        return {"reportResponse": out}


@dataclass
class Done:
    """A <reportDoneResponse>: the answer to /finish, the ESP's receipt."""

    report_id: str
    file_ids: list[str]
    status: int = 200

    def data(self) -> dict[str, Any]:
        return {"reportDoneResponse": {"responseCode": 0, "reportId": int(self.report_id),
                                       "files": {"fileId": self.file_ids}}}


# Each refusal's code, and its HTTP status where it is not the code's own.
REFUSALS: dict[Reason, tuple[Code, int | None]] = {
    Reason.NO_SUCH_REPORT: (Code.REPORT_DOES_NOT_EXIST, None),
    Reason.NO_SUCH_FILE: (Code.FILE_DOES_NOT_EXIST, None),
    Reason.FINISHED: (Code.ALREADY_FINISHED, None),
    Reason.RETRACTED: (Code.ALREADY_RETRACTED, None),
    Reason.ABANDONED: (Code.ABANDONED, None),
    Reason.DESCRIBED: (Code.INVALID_REQUEST, 409),
    Reason.OPEN: (Code.INVALID_REQUEST, None),
    Reason.INVALID: (Code.VALIDATION_FAILED, None),
    Reason.TOO_LARGE: (Code.INVALID_REQUEST, 413),
}
LOGIN_REFUSALS: dict[Why, tuple[Code, int | None]] = {
    Why.WRONG: (Code.AUTHENTICATION_REQUIRED, None),
    Why.TOO_MANY: (Code.AUTHENTICATION_REQUIRED, 429),
    Why.BUSY: (Code.SERVER_ERROR, 503),
}


def refusal(refused: Refused) -> Answer:
    code, status = REFUSALS[refused.reason]
    return Answer(code, refused.detail, refused.report_id, refused.file_id,
                  errors=refused.errors, http_status=status)


def answer(outcome: Opened | FileAdded | FileDescribed | Finished | RetractionRequested | Refused
           ) -> Answer | Done:
    """/ispws's answer to a step's outcome."""
    match outcome:
        case Refused():
            return refusal(outcome)
        case Opened(report_id):
            return Answer(Code.SUCCESS, report_id=report_id)
        case FileAdded(report_id, file_id, md5):
            return Answer(Code.SUCCESS, report_id=report_id, file_id=file_id, hash=md5)
        case FileDescribed(report_id, file_id):
            return Answer(Code.SUCCESS, report_id=report_id, file_id=file_id)
        case Finished(report_id, file_ids):
            return Done(report_id, file_ids)
        case RetractionRequested(report_id, post_finish):
            return Answer(Code.SUCCESS, "post-finish retraction accepted" if post_finish else "",
                          report_id=report_id)
    assert_never(outcome)


def not_logged_in(failed: LoginFailed) -> Answer:
    code, status = LOGIN_REFUSALS[failed.why]
    return Answer(code, failed.reason, http_status=status, retry_after_s=failed.retry_after_s)


# Extensions the JSON spelling carries and the schema's XML elements do not.
XML_ONLY_IN_JSON = {"reportResponse": ("errors",), "reportDoneResponse": ("responseDescription",)}

# Text XML cannot carry (control characters, lone surrogates); an echoed id may hold them.
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _xml(data: dict[str, Any]) -> bytes:
    ((root, body),) = data.items()
    element = etree.Element(root)
    for key, value in body.items():
        if key in XML_ONLY_IN_JSON.get(root, ()):
            continue  # the XML spelling keeps the schema's elements only
        if key == "files":
            files = etree.SubElement(element, "files")
            for file_id in value["fileId"]:
                etree.SubElement(files, "fileId").text = xml_text(file_id)
        else:
            etree.SubElement(element, key).text = xml_text(value)
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8", standalone=True)


def wants_json(accept: str | None) -> bool:
    """JSON only when asked for and preferred to XML (XML stays the default)."""
    if not accept:
        return False
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    json_at = next((i for i, k in enumerate(kinds) if k in ("application/json", "*/json")), None)
    xml_at = next((i for i, k in enumerate(kinds) if k.endswith("/xml")), None)
    return json_at is not None and (xml_at is None or json_at < xml_at)


def render(answer: Answer | Done, accept: str | None) -> Response:
    headers = {}
    if isinstance(answer, Answer) and answer.code is Code.AUTHENTICATION_REQUIRED:
        headers["WWW-Authenticate"] = 'Basic realm="tipline"'
    if isinstance(answer, Answer) and answer.done:  # the schema's element has no description
        headers["Tipline-Response-Description"] = " | ".join(
            answer.description.splitlines()).encode("ascii", "replace").decode()[:2000]
    if isinstance(answer, Answer) and answer.retry_after_s:
        headers["Retry-After"] = str(answer.retry_after_s)
    if wants_json(accept):
        return Response(json.dumps(answer.data()), answer.status, headers,
                        media_type="application/json")
    return Response(_xml(answer.data()), answer.status, headers, media_type="application/xml")
