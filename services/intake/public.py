"""The public door under /report: anyone may report, with no login, and add to their report
later with its receipt. Thin routes over `Reporting` (the same core as the ESPs' doors).

Abuse resistance without third parties: every form is counted per client address and for
everyone (`services/intake/throttle.py`, before its body is read: 429, or 503 when everyone
together sends too many, with Retry-After); bodies are small (`BODY_LIMIT`); a form is taken only
with its token, not sent sooner than a person could fill it in (`services/intake/receipts.py`);
the same form sent twice (a double click, a resend) is one report, with the same receipt.

The client address is the one uvicorn gives (`request.client`): behind a proxy, uvicorn's
`forwarded_allow_ips` says whose X-Forwarded-For to believe.
"""

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from services.intake import publicpages as pages
from services.intake.forms import Forms
from services.intake.outcomes import Reason, Refused
from services.intake.publicform import Errors, Filed, read_addition, read_report
from services.intake.receipts import Problem, Purpose, Token, Tokens
from services.intake.reporting import Reporting, Reservation
from services.intake.throttle import Throttle
from shared.settings import Settings

PREFIX = pages.PREFIX
BODY_LIMIT = 64 * 1024  # a form's body: the longest description and many addresses fit
NO_STORE = {"Cache-Control": "no-store"}  # a receipt, or a form with what someone typed
FORM_TYPE = "application/x-www-form-urlencoded"
PROBLEMS = {
    Problem.INVALID: "This form could not be read. Please check your answers and send it again.",
    Problem.TOO_SOON: "Please read your answers through, then send the form again.",
    Problem.EXPIRED: "This form was open for a long time. Please check your answers and send "
                     "it again.",
}


@dataclass
class PublicDoor:
    reporting: Reporting
    forms: Forms
    throttle: Throttle
    settings: Settings
    _tokens: Tokens | None = None

    async def tokens(self) -> Tokens:
        if self._tokens is None:
            settings = self.settings
            self._tokens = Tokens(await self.forms.key(), settings.tipline_public_form_min_s,
                                  settings.tipline_public_form_max_s)
        return self._tokens


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%d %B %Y, %H:%M UTC")


def _html(text: str, status: int = 200, *, blank_form: bool = False,
          headers: dict[str, str] | None = None) -> HTMLResponse:
    """A page, under the strict CSP. Only a blank form may be kept by the browser: going back
    to it shows the same form (its token), so sending it again is still one report."""
    cache = {"Cache-Control": "private, no-cache"} if blank_form else NO_STORE
    return HTMLResponse(text, status, headers={**pages.HEADERS, **cache, **(headers or {})})


def door(request: Request) -> PublicDoor:
    return request.app.state.public  # type: ignore[no-any-return]


def throttled(request: Request) -> Response | None:
    """A form more than this address (or everyone) may send now: try later, with Retry-After."""
    address = request.client.host if request.client else "unknown"
    refused = door(request).throttle.take(address, time.monotonic())
    if refused is None:
        return None
    page = pages.try_later(-(-refused.retry_after_s // 60), refused.everyone)
    return _html(page, 503 if refused.everyone else 429,
                 headers={"Retry-After": str(refused.retry_after_s)})


async def read_form(request: Request) -> dict[str, str] | Response:
    """The fields a browser sent (the first of each name), or the page refusing what no form
    sends."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != FORM_TYPE:
        return _html(pages.refused("This is not a form we can read",
                                   "Please use the form on this site."), 415)
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True,
                          max_num_fields=40, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return _html(pages.refused("This is not a form we can read",
                                   "Please use the form on this site."), 400)
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value.replace("\r\n", "\n"))
    return form


router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("")
async def report_form(request: Request) -> Response:
    tokens = await door(request).tokens()
    return _html(pages.report_form(tokens.issue(Purpose.REPORT, time.time())), blank_form=True)


@router.get("/form.css")
async def stylesheet() -> Response:
    return PlainTextResponse(pages.STYLE, media_type="text/css",
                             headers={"Cache-Control": "public, max-age=3600",
                                      "X-Content-Type-Options": "nosniff"})


@dataclass(frozen=True)
class Sent:
    """A form let through: its fields but the token, and the token it came with, checked."""

    form: dict[str, str]
    values: dict[str, str]
    token: Token
    tokens: Tokens


class FormPage(Protocol):
    def __call__(self, token: str, values: Mapping[str, str] | None = None,
                 errors: Errors | None = None, notice: str | None = None) -> str: ...


async def sent_form(request: Request, purpose: Purpose,
                    page: FormPage) -> Sent | Response:
    """The throttle, the body and the token, as every public form is taken; a form whose token
    will not do is shown again (`page`) with what was typed, and a fresh token but for one sent
    too soon (its time keeps running)."""
    if (refused := throttled(request)) is not None:
        return refused
    form = await read_form(request)
    if isinstance(form, Response):
        return form
    values = {k: v for k, v in form.items() if k != "token"}
    tokens = await door(request).tokens()
    token = tokens.check(form.get("token", ""), purpose, time.time())
    if isinstance(token, Problem):
        again = form.get("token", "") if token is Problem.TOO_SOON else tokens.issue(
            purpose, time.time())
        return _html(page(again, values, notice=PROBLEMS[token]), 422)
    return Sent(form, values, token, tokens)


@router.post("")
async def send_report(request: Request) -> Response:
    sent = await sent_form(request, Purpose.REPORT, pages.report_form)
    if isinstance(sent, Response):
        return sent
    public, form, values, token = door(request), sent.form, sent.values, sent.token
    filed = read_report(values, datetime.now(UTC))
    if not isinstance(filed, Filed):
        return _html(pages.report_form(form["token"], values, filed), 422)
    body = hashlib.sha256((filed.report.model_dump_json() + (
        filed.contact.model_dump_json() if filed.contact else "")).encode()).hexdigest()
    first = await public.forms.first_filing(token.nonce, public.reporting.ids.next(), body)
    code = sent.tokens.code(token.nonce)
    made = await public.reporting.file_public(
        filed.report, filed.contact, code, Reservation(first.report_id, Forms.slot(token.nonce)))
    if isinstance(made, Refused):
        return refusal_page(made)
    request.state.report_id = made.report_id  # for the request's log line
    notice = None if first.same else ("This form had been sent already, as the report below. "
                                      "What you changed since was not added: add it with your "
                                      "code.")
    return _html(pages.receipt(made.report_id, code, _when(made.at), notice))


@router.get("/add")
async def add_form(request: Request) -> Response:
    tokens = await door(request).tokens()
    return _html(pages.add_form(tokens.issue(Purpose.ADD, time.time())), blank_form=True)


@router.post("/add")
async def add_information(request: Request) -> Response:
    sent = await sent_form(request, Purpose.ADD, pages.add_form)
    if isinstance(sent, Response):
        return sent
    public, form, values, token = door(request), sent.form, sent.values, sent.token
    addition = read_addition(values)
    if isinstance(addition, dict):
        return _html(pages.add_form(form["token"], values, addition), 422)
    added = await public.reporting.add_information(addition.report_id, addition.code,
                                                   addition.text, token.nonce)
    if isinstance(added, Refused) and added.reason is Reason.NO_SUCH_REPORT:
        # The same answer whether the report exists or not: a number alone tells nothing.
        return _html(pages.add_form(form["token"], values, {
            "code": "The report number and secret code do not match. Check both against "
                    "your receipt."}), 422)
    if isinstance(added, Refused):
        return refusal_page(added)
    request.state.report_id = added.report_id  # for the request's log line
    return _html(pages.added(added.report_id, _when(time.time())))


def refusal_page(refusal: Refused) -> Response:
    """A refusal no form can correct, said plainly."""
    if refusal.reason is Reason.TOO_LARGE:
        return _html(pages.too_long(), 413)
    # A report of the public's is kept finished and takes additions: nothing else is expected.
    return _html(pages.refused("Nothing more can be added to this report",
                               "Please send what you know as a new report."), 409)
