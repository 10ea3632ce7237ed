"""The public form's pages, as HTML. Pure: every value escaped, nothing loaded from elsewhere.

Plain HTML that works without JavaScript: labels on every field, a hint under its label, an
error next to the field it concerns (and listed at the top, each a link to its field, the first
field in error focused), what was typed kept. One stylesheet, served by intake itself
(`/report/form.css`); the Content-Security-Policy allows nothing else.
"""

from collections.abc import Mapping
from html import escape

from services.intake.publicform import FIELDS, US_STATES, Errors, Field
from shared.rules import INCIDENT_TYPES

PREFIX = "/report"
STYLESHEET = f"{PREFIX}/form.css"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
URGENT = ("If a child is in immediate danger, call 911 (or your local emergency number) "
          "first.")


def page(title: str, body: str, *, errors: int = 0) -> str:
    shown = f"Error: {title}" if errors else title
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(shown)}: tipline</title>"
        f'<link rel="stylesheet" href="{STYLESHEET}"></head>'
        '<body><header><a class="brand" href="/report">tipline</a>'
        '<span>Reports from the public</span></header>'
        f'<main id="main">{body}</main></body></html>\n')


# --- the parts of a form -------------------------------------------------------------------


def _described_by(field: Field, hint: str | None, error: str | None) -> str:
    ids = [f"{field.name}-hint"] if hint else []
    ids += [f"{field.name}-error"] if error else []
    return f' aria-describedby="{" ".join(ids)}"' if ids else ""


def _control(field: Field, html: str, hint: str | None, error: str | None) -> str:
    """A field: its label, its hint, its error (next to it), the control."""
    optional = "" if field.required else ' <span class="optional">(optional)</span>'
    parts = [f'<div class="field{" has-error" if error else ""}" id="{field.name}-field">',
             f'<label for="{field.name}">{escape(field.label)}{optional}</label>']
    if hint:
        parts.append(f'<p class="hint" id="{field.name}-hint">{escape(hint)}</p>')
    if error:
        parts.append(f'<p class="error" id="{field.name}-error">'
                     f'<span class="visually-hidden">Error: </span>{escape(error)}</p>')
    parts += [html, "</div>"]
    return "".join(parts)


class Form:
    """One form's fields as the page shows them: what was typed, and the errors."""

    def __init__(self, values: Mapping[str, str], errors: Errors) -> None:
        self.values, self.errors = values, errors
        self._first_error = next((f for f in FIELDS if f in errors), None)

    def _attrs(self, field: Field, hint: str | None) -> str:
        error = self.errors.get(field.name)
        attrs = f'id="{field.name}" name="{field.name}"'
        attrs += ' required aria-required="true"' if field.required else ""
        attrs += ' aria-invalid="true"' if error else ""
        attrs += " autofocus" if field.name == self._first_error else ""
        return attrs + _described_by(field, hint, error)

    def text(self, name: str, hint: str | None = None, *, kind: str = "text",
             extra: str = "") -> str:
        field = FIELDS[name]
        value = escape(self.values.get(name, ""))
        html = f'<input type="{kind}" {self._attrs(field, hint)} value="{value}"{extra}>'
        return _control(field, html, hint, self.errors.get(name))

    def area(self, name: str, hint: str | None = None, *, rows: int = 6,
             extra: str = "") -> str:
        field = FIELDS[name]
        html = (f'<textarea {self._attrs(field, hint)} rows="{rows}"{extra}>'
                f"{escape(self.values.get(name, ''))}</textarea>")
        return _control(field, html, hint, self.errors.get(name))

    def select(self, name: str, options: list[tuple[str, str]], hint: str | None = None) -> str:
        field = FIELDS[name]
        chosen = self.values.get(name, "")
        items = "".join(
            f'<option value="{escape(value)}"{" selected" if value == chosen else ""}>'
            f"{escape(text)}</option>" for value, text in options)
        html = f"<select {self._attrs(field, hint)}>{items}</select>"
        return _control(field, html, hint, self.errors.get(name))

    def summary(self) -> str:
        """The errors at the top, each a link to its field."""
        if not self.errors:
            return ""
        items = "".join(f'<li><a href="#{name}">{escape(self.errors[name])}</a></li>'
                        for name in FIELDS if name in self.errors)
        count = len(self.errors)
        return ('<div class="summary" role="alert" aria-labelledby="summary-title">'
                f'<h2 id="summary-title">Please check {count} '
                f'{"answer" if count == 1 else "answers"}</h2><ul>{items}</ul></div>')


def _notice(text: str | None) -> str:
    return f'<p class="notice" role="status">{escape(text)}</p>' if text else ""


# --- the pages ---------------------------------------------------------------------------


def report_form(token: str, values: Mapping[str, str] | None = None,
                errors: Errors | None = None, notice: str | None = None) -> str:
    form = Form(values or {}, errors or {})
    kinds = [("", "Choose one"), *((t, t) for t in INCIDENT_TYPES)]
    states = [("", "Not in the US, or not known"), *((s, s) for s in US_STATES)]
    body = (
        "<h1>Make a report</h1>"
        "<p>Tell us what you saw. You do not need an account, and you do not have to say who "
        "you are. An analyst reads every report before anything is passed to law "
        "enforcement.</p>"
        f'<p class="urgent"><strong>{escape(URGENT)}</strong></p>'
        f"{form.summary()}{_notice(notice)}"
        f'<form method="post" action="{PREFIX}" novalidate>'
        f'<input type="hidden" name="token" value="{escape(token)}">'
        "<fieldset><legend>What happened</legend>"
        + form.select("incident_type", kinds)
        + form.text("incident_date", "If you are not sure, give your best guess.", kind="date")
        + form.area("description", "Who was involved, and what was said, shown or done. Do "
                    "not attach or copy images.", rows=8, extra=' maxlength="3000"')
        + "</fieldset><fieldset><legend>Where it happened</legend>"
        '<p class="hint">Give whatever you know.</p>'
        + form.area("urls", "Copy them from the address bar: https://…", rows=3,
                    extra=' autocomplete="off"')
        + form.text("platform", "For example a game, an app or a social network.",
                    extra=' maxlength="256"')
        + form.text("country", "Two letters, for example US, GB or CA.",
                    extra=' maxlength="2" autocomplete="country" class="short"')
        + form.select("us_state", states)
        + form.text("place", None, extra=' maxlength="200"')
        + "</fieldset><fieldset><legend>About you</legend>"
        '<p class="hint">You may leave these empty. If you give them, an analyst may contact '
        "you about your report. They are passed to law enforcement only if an analyst decides "
        "it is needed.</p>"
        + form.text("contact_name", extra=' maxlength="200" autocomplete="name"')
        + form.text("contact_email", kind="email",
                    extra=' maxlength="255" autocomplete="email"')
        + form.text("contact_phone", kind="tel", extra=' maxlength="40" autocomplete="tel"')
        + '</fieldset><button type="submit">Send report</button></form>'
        f'<p class="aside"><a href="{PREFIX}/add">Add information to a report you made</a></p>')
    return page("Make a report", body, errors=len(form.errors))


def receipt(report_id: str, code: str, received_at: str, notice: str | None = None) -> str:
    """The receipt: the report's number, its secret code, when it was received; nothing of what
    becomes of it (shared/audiences.py, PUBLIC_REPORTER_SEES)."""
    body = (
        "<h1>Thank you: your report was received</h1>"
        f"{_notice(notice)}"
        '<dl class="receipt">'
        f'<dt>Report number</dt><dd data-field="report_id">{escape(report_id)}</dd>'
        f'<dt>Secret code</dt><dd data-field="code">{escape(code)}</dd>'
        f'<dt>Received</dt><dd data-field="received_at">{escape(received_at)}</dd></dl>'
        "<p>Write both down, or save this page. With them you can add information to your "
        "report later. We cannot show you the code again, and we will never ask you for it by "
        "phone or email.</p>"
        "<p>An analyst will read your report and decide whether to pass it to law enforcement. "
        "For the safety of everyone involved, we cannot tell you what happens next.</p>"
        f'<p><a href="{PREFIX}/add">Add information to your report</a></p>')
    return page("Your report was received", body)


def add_form(token: str, values: Mapping[str, str] | None = None,
             errors: Errors | None = None, notice: str | None = None) -> str:
    form = Form(values or {}, errors or {})
    body = (
        "<h1>Add information to a report</h1>"
        "<p>You need the report number and the secret code from your receipt.</p>"
        f"{form.summary()}{_notice(notice)}"
        f'<form method="post" action="{PREFIX}/add" novalidate>'
        f'<input type="hidden" name="token" value="{escape(token)}">'
        + form.text("report_number", None, extra=' inputmode="numeric" autocomplete="off"')
        + form.text("code", "Four groups of letters and digits, such as 7K3F-…",
                    extra=' autocomplete="off" spellcheck="false"')
        + form.area("text", "Anything you remembered or found since. Do not attach or copy "
                    "images.", rows=8, extra=' maxlength="3000"')
        + '<button type="submit">Add to my report</button></form>'
        f'<p class="aside"><a href="{PREFIX}">Make a new report</a></p>')
    return page("Add information to a report", body, errors=len(form.errors))


def added(report_id: str, received_at: str) -> str:
    body = (
        "<h1>Thank you: your information was added</h1>"
        '<dl class="receipt">'
        f'<dt>Report number</dt><dd data-field="report_id">{escape(report_id)}</dd>'
        f'<dt>Received</dt><dd data-field="received_at">{escape(received_at)}</dd></dl>'
        "<p>An analyst will read it with your report.</p>"
        f'<p><a href="{PREFIX}/add">Add more</a></p>')
    return page("Your information was added", body)


def try_later(minutes: int, everyone: bool) -> str:
    why = ("We are receiving a great many reports just now." if everyone else
           "Too many forms were sent from your connection.")
    body = (f"<h1>Please try again later</h1><p>{why} Please try again in about {minutes} "
            f"{'minute' if minutes == 1 else 'minutes'}. What you wrote was not sent: go back "
            "to find it in the form.</p>"
            f'<p class="urgent"><strong>{escape(URGENT)}</strong></p>')
    return page("Please try again later", body)


def unavailable(request_id: str) -> str:
    """Something tipline needs is away for a moment: nothing was sent."""
    body = ("<h1>Please try again in a moment</h1><p>We could not take your form just now, and "
            "nothing was sent. Go back to find what you wrote in the form, and send it again in "
            "a minute.</p>"
            f'<p class="hint">Reference: {escape(request_id)}</p>'
            f'<p class="urgent"><strong>{escape(URGENT)}</strong></p>')
    return page("Please try again in a moment", body)


def too_long() -> str:
    return refused("Your report is too long", "Please shorten the description or the web "
                   "addresses, then send it again.")


def refused(title: str, text: str) -> str:
    """A request no form could make (too large, not a form): what to do instead."""
    body = (f"<h1>{escape(title)}</h1><p>{escape(text)}</p>"
            f'<p><a href="{PREFIX}">Back to the form</a></p>')
    return page(title, body)


STYLE = """/* The public form: system fonts, nothing from elsewhere; readable at 320 px and up. */
:root { --ink: #1a202c; --muted: #4a5568; --line: #a0aec0; --accent: #1a4d8f;
        --error: #b42318; --focus: #ffbf47; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; font: 17px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
       sans-serif; color: var(--ink); background: #fff; overflow-wrap: anywhere; }
header { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: baseline;
         padding: .7rem 1rem; background: #1a365d; color: #fff; }
header .brand { color: #fff; font-weight: 700; text-decoration: none; }
main { max-width: 42rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.6rem; line-height: 1.25; margin: .6rem 0 .8rem; }
h2 { font-size: 1.15rem; margin: 0 0 .4rem; }
a { color: var(--accent); }
a:focus, input:focus, select:focus, textarea:focus, button:focus {
  outline: 3px solid var(--focus); outline-offset: 0; }
.urgent { border-left: 5px solid var(--error); padding: .3rem .8rem; }
fieldset { border: 0; padding: 0; margin: 1.4rem 0 0; min-width: 0; }
legend { font-size: 1.25rem; font-weight: 700; padding: 0; margin-bottom: .3rem; }
.field { margin: 0 0 1.1rem; }
.field.has-error { border-left: 5px solid var(--error); padding-left: .8rem; }
label { display: block; font-weight: 600; margin-bottom: .15rem; }
.optional { font-weight: 400; color: var(--muted); }
.hint { color: var(--muted); margin: 0 0 .3rem; }
.error { color: var(--error); font-weight: 700; margin: 0 0 .3rem; }
input, select, textarea { display: block; width: 100%; max-width: 100%; font: inherit;
  padding: .45rem .5rem; border: 2px solid var(--ink); border-radius: 0; background: #fff; }
input.short { max-width: 6rem; }
[aria-invalid="true"] { border-color: var(--error); }
button { font: inherit; font-weight: 700; color: #fff; background: #1d6b3a; border: 0;
  padding: .6rem 1.2rem; margin-top: .6rem; cursor: pointer; box-shadow: 0 2px 0 #0b3b1f; }
.summary { border: 4px solid var(--error); padding: .8rem 1rem; margin: 1rem 0; }
.summary ul { margin: 0; padding-left: 1.2rem; }
.summary a { color: var(--error); font-weight: 700; }
.notice { border-left: 5px solid var(--accent); padding: .3rem .8rem; }
dl.receipt { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem;
  border: 3px solid #1d6b3a; padding: .8rem 1rem; margin: 1rem 0; }
dl.receipt dt { font-weight: 600; }
dl.receipt dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 1.1rem; min-width: 0; }
.aside { margin-top: 2rem; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
@media (max-width: 30rem) {
  dl.receipt { grid-template-columns: 1fr; }
  h1 { font-size: 1.35rem; }
}
"""
