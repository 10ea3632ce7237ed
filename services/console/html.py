"""The console's HTML bits, every value escaped: times (UTC, labelled), badges, links, tables that
scroll inside their card, pagers, and the page around a `<main>`.

Every row carries a `data-key`, so the live script (static/console.js) updates a row in place
instead of replacing the page: focus, selection and scroll stay where the reader left them.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from services.console.queries import Paged
from shared.agencies import Agency


def h(value: object) -> str:
    return escape(str(value), quote=True)


def when(at: float | None) -> str:
    """A time, in UTC and saying so."""
    if at is None:
        return "-"
    moment = datetime.fromtimestamp(at, UTC)
    return (f'<time datetime="{moment.isoformat(timespec="seconds")}">'
            f"{moment:%Y-%m-%d %H:%M:%S} UTC</time>")


def clock(at: float) -> str:
    """A short time of day, in UTC and saying so ("19:38 UTC")."""
    moment = datetime.fromtimestamp(at, UTC)
    return (f'<time datetime="{moment.isoformat(timespec="seconds")}">'
            f"{moment:%H:%M} UTC</time>")


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 3 * 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def badge(state: str) -> str:
    if not state:
        return '<span class="muted">-</span>'
    kind = state.split(",")[0].split(" ")[0]
    return f'<span class="badge {h(kind)}" data-state="{h(state)}">{h(state)}</span>'


def report_link(report_id: str | None) -> str:
    if not report_id:
        return '<span class="muted">-</span>'
    return f'<a class="id" href="/reports/{quote(report_id, safe="")}">{h(report_id)}</a>'


def agency_link(agency_id: str | None, agencies: Mapping[str, Agency] | None = None) -> str:
    """The agency's display name from the registry, with its id."""
    if not agency_id:
        return '<span class="muted">-</span>'
    agency = (agencies or {}).get(agency_id)
    name = f' <span class="name">{h(agency.name)}</span>' if agency and agency.name else ""
    return (f'<a href="/agencies/{quote(agency_id, safe="")}">{h(agency_id)}</a>{name}')


def url(path: str, params: Mapping[str, object]) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return h(f"{path}?{query}" if query else path)


def table(head: Iterable[str], rows: list[str], empty: str, cls: str = "") -> str:
    if not rows:
        return f'<p class="muted">{h(empty)}</p>'
    cells = "".join(f"<th scope=\"col\">{c}</th>" for c in head)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{cells}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def pager(path: str, params: Mapping[str, object], paged: Paged[Any],
          name: str = "page", what: str = "rows") -> str:
    """"page 2 of 40 · 980 rows" and links; a page asked past the last says so."""
    counted = f"{paged.total:,} {what if paged.total != 1 else what.removesuffix('s')}"
    note = (f' <span class="note">(page {paged.asked:,} asked: there are {paged.pages:,})'
            "</span>") if paged.clamped else ""
    if paged.pages <= 1:
        return f'<nav class="pager" aria-label="{h(what)} pages">{counted}{note}</nav>'

    def link(n: int, text: str, rel: str) -> str:
        return f'<a rel="{rel}" href="{url(path, {**params, name: n})}">{text}</a>'

    parts = [link(1, "&laquo; first", "first") if paged.page > 2 else "",
             link(paged.page - 1, "&lsaquo; prev", "prev") if paged.page > 1 else "",
             f"page {paged.page:,} of {paged.pages:,} · {counted}{note}",
             link(paged.page + 1, "next &rsaquo;", "next") if paged.page < paged.pages else "",
             link(paged.pages, "last &raquo;", "last") if paged.page < paged.pages - 1 else ""]
    return (f'<nav class="pager" aria-label="{h(what)} pages">'
            f'{" ".join(p for p in parts if p)}</nav>')


def layout(title: str, body: str, version: int, who: str = "", role: str = "") -> str:
    """A whole page; signed in (`who`), its <main> is live (static/console.js refreshes it)."""
    user = (f'<span class="who">{h(who)} ({h(role)})<form method="post" action="/logout">'
            f'<button>log out</button></form></span>') if who else ""
    nav = ('<nav class="links"><a href="/">Overview</a><a href="/agencies">Agencies</a>'
           '<a href="/triage">Triage</a><a href="/deadletters">Dead letters</a></nav>'
           '<form action="/search" class="search" role="search">'
           '<input name="q" placeholder="report id or prefix" aria-label="report id or prefix">'
           '<input name="esp" placeholder="ESP prefix" aria-label="ESP prefix">'
           '<button>search</button></form>') if who else ""
    live = ('<div class="live"><span id="live-state" role="status" aria-live="polite" '
            'data-state="live">live</span><button type="button" id="live-pause" '
            'aria-pressed="false">pause</button></div>') if who else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{h(title)} · tipline console</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        f'<header><a class="brand" href="/">tipline console</a>{nav}{live}{user}</header>'
        + (f'<main id="live" data-version="{version}">' if who else "<main>")
        + f"{body}</main></body></html>"
    )


def login(error: str = "", next_url: str = "/") -> str:
    message = f'<p class="error">{h(error)}</p>' if error else ""
    return (
        '<section class="login"><h1>Sign in</h1>'
        "<p>Analysts and operators: the login of the analyst directory.</p>"
        f'{message}<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{h(next_url)}">'
        '<label>Analyst id <input name="analyst_id" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        "<button>Sign in</button></form></section>"
    )


def refused(reason: str) -> str:
    """A page's body for a request it cannot answer (a filter it does not know)."""
    return (f'<h1>Cannot show that</h1><p class="error">{h(reason)}</p>'
            '<p><a href="/">Overview</a></p>')
