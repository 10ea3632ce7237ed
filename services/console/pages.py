"""The console's pages as HTML, from the read model: pure functions, every value escaped.

Each page function returns the inner HTML of `<main>`; `layout` wraps it for a full load, and
the live script fetches the fragment alone. Pages show ids, states, agencies, times and ESP
names, never report content. Long lists are paginated (`PAGE` rows).
"""

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlencode

from services.console.model import FLOW, AgencyStats, ReadModel, Report, Track
from shared.agencies import Agency

PAGE = 25
COLOURS = {"accepted": "#2b6cb0", "rejected": "#c05621", "referred": "#2f855a",
           "retracted": "#6b46c1", "corrected": "#c53030"}


def h(value: object) -> str:
    return escape(str(value), quote=True)


def when(at: float | None) -> str:
    if at is None:
        return "-"
    moment = datetime.fromtimestamp(at, UTC)
    return f'<time datetime="{moment.isoformat()}">{moment:%Y-%m-%d %H:%M:%S}</time>'


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def badge(state: str) -> str:
    if not state:
        return '<span class="muted">-</span>'
    kind = state.split(",")[0].split(" ")[0]
    return f'<span class="badge {h(kind)}" data-state="{h(state)}">{h(state)}</span>'


def report_link(report_id: str) -> str:
    return f'<a href="/reports/{quote(report_id, safe="")}">{h(report_id)}</a>'


def agency_link(agency_id: str) -> str:
    return f'<a href="/agencies/{quote(agency_id, safe="")}">{h(agency_id)}</a>'


def pager(path: str, params: Mapping[str, str], page: int, pages: int) -> str:
    if pages <= 1:
        return ""

    def link(n: int, text: str) -> str:
        return f'<a href="{h(path)}?{h(urlencode({**params, "page": n}))}">{text}</a>'

    parts = [link(page - 1, "&larr; newer") if page > 1 else "",
             f"page {page} of {pages}",
             link(page + 1, "older &rarr;") if page < pages else ""]
    return f'<nav class="pager">{" ".join(p for p in parts if p)}</nav>'


def layout(title: str, body: str, version: int, who: str = "", role: str = "") -> str:
    """A whole page; signed in (`who`), its <main> is live (static/console.js refreshes it)."""
    user = (f'<span class="who">{h(who)} ({h(role)})<form method="post" action="/logout">'
            f'<button>log out</button></form></span>') if who else ""
    nav = ('<nav><a href="/">Overview</a><a href="/agencies">Agencies</a>'
           '<a href="/triage">Triage</a>'
           '<form action="/search" class="search"><input name="q" placeholder="report id" '
           'aria-label="report id"><input name="esp" placeholder="ESP" aria-label="ESP">'
           '<button>search</button></form></nav>') if who else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{h(title)} · tipline console</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        f'<header><a class="brand" href="/">tipline console</a>{nav}{user}</header>'
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


def _status(model: ReadModel) -> str:
    state = ("live" if model.caught_up
             else '<span class="badge pending">rebuilding from the topics</span>')
    return (f'<p class="status">read model: {len(model.reports)} reports from {model.events} '
            f"records · {state}</p>")


# --- Overview -----------------------------------------------------------------------------


def overview(model: ReadModel, agencies: Mapping[str, Agency], page: int, now: float) -> str:
    chart = model.chart(now)
    hour = [sum(counts[i] for _, counts in chart) for i in range(len(FLOW))]
    cards = "".join(
        f'<div class="card" data-flow="{name}"><span class="n">{n}</span>'
        f'<span class="flow-{name}">{name}</span></div>'
        for name, n in zip(FLOW, hour, strict=True))
    reports, pages = model.newest(model.order, page, PAGE)
    return (
        f"<h1>Overview</h1>{_status(model)}"
        f'<section><h2>The last hour</h2><div class="cards">{cards}</div>'
        f"{svg_chart(chart)}</section>"
        f"<section><h2>Corrections per agency</h2>{agency_table(model, agencies, now)}</section>"
        f'<div class="two"><section><h2>Dead letters</h2>{dead_letters(model)}</section>'
        f"<section><h2>Consumer lag</h2>{lag(model)}</section></div>"
        f"<section><h2>Reports, newest first</h2>{report_table(model, reports, now)}"
        f"{pager('/', {}, page, pages)}</section>"
    )


def svg_chart(chart: list[tuple[int, list[int]]], width: int = 720, height: int = 160) -> str:
    """One polyline a series over the minutes of `chart`; inline SVG, no script."""
    top = max((max(counts) for _, counts in chart), default=0) or 1
    step = width / max(1, len(chart) - 1)
    lines = []
    for i, name in enumerate(FLOW):
        points = " ".join(f"{x * step:.1f},{height - counts[i] * (height - 10) / top:.1f}"
                          for x, (_, counts) in enumerate(chart))
        lines.append(f'<polyline class="series" data-series="{name}" fill="none" '
                     f'stroke="{COLOURS[name]}" stroke-width="2" points="{points}"/>')
    legend = "".join(f'<span class="flow-{n}"><i></i>{n}</span>' for n in FLOW)
    return (
        f'<figure class="chart"><svg viewBox="-40 -5 {width + 50} {height + 25}" '
        f'role="img" aria-label="reports per minute, last hour">'
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" class="axis"/>'
        f'<line x1="0" y1="0" x2="0" y2="{height}" class="axis"/>'
        f'<text x="-6" y="10" text-anchor="end">{top}/min</text>'
        f'<text x="-6" y="{height}" text-anchor="end">0</text>'
        f'<text x="0" y="{height + 18}">-60 min</text>'
        f'<text x="{width / 2}" y="{height + 18}" text-anchor="middle">-30 min</text>'
        f'<text x="{width}" y="{height + 18}" text-anchor="end">now</text>'
        f'{"".join(lines)}</svg><figcaption class="legend">{legend}</figcaption></figure>'
    )


def agency_table(model: ReadModel, agencies: Mapping[str, Agency], now: float) -> str:
    names = sorted(set(agencies) | set(model.agencies))
    rows = []
    for agency_id in names:
        stats = model.agencies.get(agency_id) or AgencyStats()
        agency = agencies.get(agency_id)
        can_ack = "" if agency is None or agency.verify_keys else (
            ' <span class="badge escalated">cannot acknowledge</span>')
        overdue = stats.overdue(now, model.ack_timeout_s)
        rows.append(
            f'<tr data-agency="{h(agency_id)}"><td>{agency_link(agency_id)}{can_ack}</td>'
            f'<td class="n">{stats.sent["referral"]}</td>'
            f'<td class="n">{stats.sent["amendment"]}</td>'
            f'<td class="n" data-col="sent">{stats.corrections}</td>'
            f'<td class="n" data-col="acked">{stats.acked}</td>'
            f'<td class="n{" warn" if overdue else ""}" data-col="overdue">{overdue}</td>'
            f'<td class="n{" alert" if stats.escalated else ""}" data-col="escalated">'
            f"{stats.escalated}</td></tr>")
    return table(("agency", "referrals", "amendments", "corrections sent", "acknowledged",
                  "overdue", "escalated"), rows, "no agency yet")


def table(head: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{h(empty)}</p>'
    cells = "".join(f"<th>{h(c)}</th>" for c in head)
    return f'<table><thead><tr>{cells}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def dead_letters(model: ReadModel) -> str:
    counts = [f"<tr><td>{h(service)}</td><td>{h(topic)}</td><td class='n'>{n}</td></tr>"
              for (service, topic), n in sorted(model.letters.items())]
    recent = [f"<tr><td>{when(x.failed_at)}</td><td>{h(x.service)}</td>"
              f"<td>{h(x.topic)}[{x.partition}]@{x.offset}</td>"
              f"<td>{report_link(x.key) if x.key in model.reports else h(x.key or '-')}</td>"
              f"<td>{h(x.error)}</td></tr>" for x in list(model.recent_letters)[:10]]
    return (table(("service", "topic", "letters"), counts, "none")
            + (table(("failed at", "service", "record", "key", "cause"), recent, "")
               if recent else ""))


def lag(model: ReadModel) -> str:
    rows = [f"<tr><td>{h(service)}</td><td class='n'>{sum(parts.values())}</td>"
            f"<td class='muted'>{h(', '.join(f'{k}: {v}' for k, v in sorted(parts.items())))}"
            f"</td></tr>" for service, parts in sorted(model.lag.items())]
    error = f'<p class="muted">lag unknown: {h(model.lag_error)}</p>' if model.lag_error else ""
    return table(("service", "lag", "groups and topics"), rows,
                 "no committed consumer groups yet") + error


def report_table(model: ReadModel, reports: list[Report], now: float) -> str:
    rows = []
    for report in reports:
        states = " ".join(
            f'<span class="pair">{h(a)} {badge(t.correction_state(now, model.ack_timeout_s))}'
            f"</span>" if t.correction_class() else f'<span class="pair">{h(a)}</span>'
            for a, t in sorted(report.agencies.items()))
        rows.append(f'<tr data-report="{h(report.report_id)}">'
                    f"<td>{report_link(report.report_id)}</td><td>{h(report.esp or '-')}</td>"
                    f"<td>{badge(report.state)}</td><td>{states}</td>"
                    f"<td>{when(report.first)}</td></tr>")
    return table(("report", "ESP", "state", "agencies (correction)", "first seen"), rows,
                 "no reports yet")


# --- Report -------------------------------------------------------------------------------


def report_page(model: ReadModel, report: Report, now: float) -> str:
    rows = [_track_row(model, a, t, now) for a, t in sorted(report.agencies.items())]
    supplements = [f"<tr><td>{h(kind)}</td><td>{badge(label)}</td><td>{h(analyst)}</td>"
                   f"<td>{h(added)}</td></tr>"
                   for kind, label, analyst, added in report.supplements]
    timeline = [f"<tr><td>{when(at)}</td><td>{h(what)}</td>"
                f"<td>{agency_link(agency) if agency else ''}</td><td>{h(detail or '')}</td></tr>"
                for at, what, agency, detail in sorted(report.events, key=lambda e: e[0])[:500]]
    priority = {0: "bulk", 1: "normal", 2: "high", 3: "imminent"}.get(
        report.priority if report.priority is not None else -1, "-")
    esp = (f'<a href="/search?{h(urlencode({"esp": report.esp}))}">{h(report.esp)}</a>'
           if report.esp else "-")
    return (
        f'<h1>Report <span class="id">{h(report.report_id)}</span></h1>{_status(model)}'
        f'<dl class="facts"><dt>state</dt><dd>{badge(report.state)}</dd><dt>source</dt>'
        f'<dd data-col="source">{source(report)}</dd><dt>ESP</dt>'
        f"<dd>{esp}</dd><dt>priority</dt><dd>{h(priority)}</dd><dt>first seen</dt>"
        f"<dd>{when(report.first)}</dd></dl>"
        f"<section><h2>Agencies</h2>" + table(
            ("agency", "referral", "amendments", "correction", "outcome"), rows,
            "not referred to any agency") + "</section>"
        "<section><h2>Supplements</h2>" + table(
            ("kind", "label", "analyst", "added"), supplements, "none") + "</section>"
        "<section><h2>Timeline</h2>" + table(
            ("time", "what", "agency", "detail"), timeline, "nothing yet") + "</section>"
    )


def _track_row(model: ReadModel, agency_id: str, track: Track, now: float) -> str:
    referral = ("-" if track.referral_at is None else
                f"sent {when(track.referral_at)} "
                + badge("acknowledged" if track.referral_acked else "sent"))
    amendments = (f"{track.amendments} sent, {track.amendments_acked} acknowledged"
                  if track.amendments else "-")
    correction = track.correction_state(now, model.ack_timeout_s)
    sent = f" {when(track.correction_at)}" if track.correction_at is not None else ""
    return (f'<tr data-agency="{h(agency_id)}"><td>{agency_link(agency_id)}</td>'
            f'<td class="referral">{referral}</td><td>{h(amendments)}</td>'
            f'<td class="correction">{badge(correction)}{sent}</td>'
            f"<td>{h(track.outcome or '-')}</td></tr>")


def source(report: Report) -> str:
    return ('<span class="badge public">public</span> the public form: triaged by an analyst'
            if report.source == "public" else "an ESP")


# --- Triage -------------------------------------------------------------------------------


def triage_page(model: ReadModel, page: int, now: float) -> str:
    """Reports from the public waiting for an analyst (the analyst API releases or closes
    them), oldest first."""
    waiting = sorted(model.triage.items(), key=lambda item: item[1])
    shown, pages = waiting[(page - 1) * PAGE: page * PAGE], max(1, -(-len(waiting) // PAGE))
    rows = [f'<tr data-report="{h(r)}"><td>{report_link(r)}</td><td>{when(at)}</td>'
            f'<td class="n">{age(now - at)}</td></tr>' for r, at in shown]
    return (
        f"<h1>Triage</h1>{_status(model)}"
        f'<section id="triage"><h2>Reports from the public waiting for an analyst '
        f"({len(waiting)}), oldest first</h2>"
        + table(("report", "waiting since", "age"), rows, "none: every report from the public "
                "was released, closed or withdrawn")
        + pager("/triage", {}, page, pages) + "</section>")


# --- Agency -------------------------------------------------------------------------------


def agency_page(model: ReadModel, agency_id: str, agency: Agency | None, page: int,
                now: float) -> str:
    stats = model.agencies.get(agency_id) or AgencyStats()
    name = f" · {h(agency.name)}" if agency is not None and agency.name else ""
    can_ack = "" if agency is None or agency.verify_keys else (
        '<p><span class="badge escalated">cannot acknowledge</span> no response key is '
        "registered for this agency: its corrections are re-sent, then escalated</p>")
    timeout = model.ack_timeout_s
    waiting = sorted(stats.pending.items(), key=lambda item: item[1])
    shown, pages = waiting[(page - 1) * PAGE: page * PAGE], max(1, -(-len(waiting) // PAGE))
    unacked = [
        f'<tr data-report="{h(r)}"><td>{report_link(r)}</td><td>{when(at)}</td>'
        f'<td class="n">{age(now - at)}</td><td>{badge(_track_state(model, r, agency_id, now))}'
        f"</td></tr>" for r, at in shown]
    escalated = [f'<tr data-report="{h(r)}"><td>{report_link(r)}</td><td>'
                 f"{badge(_track_state(model, r, agency_id, now))}</td></tr>"
                 for r in list(reversed(stats.escalations))[:PAGE]]
    outcomes = [f"<tr><td>{when(at)}</td><td>{report_link(r)}</td><td>{h(o)}</td></tr>"
                for at, r, o in list(reversed(stats.outcomes))[:PAGE]]
    referred, _ = model.newest(stats.reports, 1, PAGE)
    sent = ", ".join(f"{stats.sent[k]} {k}s" for k in ("referral", "amendment", "correction"))
    return (
        f'<h1>Agency <span class="id">{h(agency_id)}</span>{name}</h1>{_status(model)}{can_ack}'
        f'<dl class="facts"><dt>notices sent</dt><dd>{h(sent)}</dd>'
        f'<dt>corrections acknowledged</dt><dd data-col="acked">{stats.acked}</dd>'
        f'<dt>overdue (no ack after {age(timeout)})</dt>'
        f'<dd data-col="overdue">{stats.overdue(now, timeout)}</dd>'
        f'<dt>escalated</dt><dd data-col="escalated">{stats.escalated}</dd></dl>'
        f'<section id="unacknowledged"><h2>Unacknowledged corrections ({len(waiting)})</h2>'
        + table(("report", "sent", "age", "state"), unacked, "none: every correction is "
                "acknowledged or escalated")
        + pager(f"/agencies/{quote(agency_id, safe='')}", {}, page, pages) + "</section>"
        f'<section id="escalated"><h2>Escalated corrections ({len(stats.escalations)})</h2>'
        + table(("report", "state"), escalated, "none") + "</section>"
        f'<section id="outcomes"><h2>Outcomes ({len(stats.outcomes)})</h2>'
        + table(("time", "report", "outcome"), outcomes, "none yet") + "</section>"
        f"<section><h2>Latest referrals ({len(stats.reports)})</h2>"
        + report_table(model, referred, now) + "</section>"
    )


def _track_state(model: ReadModel, report_id: str, agency_id: str, now: float) -> str:
    report = model.reports.get(report_id)
    track = report.agencies.get(agency_id) if report else None
    return track.correction_state(now, model.ack_timeout_s) if track else ""


def agencies_page(model: ReadModel, agencies: Mapping[str, Agency], now: float) -> str:
    return (f"<h1>Agencies</h1>{_status(model)}"
            f"<section><h2>Corrections per agency</h2>{agency_table(model, agencies, now)}"
            "</section>")


# --- Search -------------------------------------------------------------------------------


def search_page(model: ReadModel, q: str, esp: str, page: int, now: float) -> str:
    if q:
        found = model.find(q)
        body = (f"<h2>Reports matching {h(q)}</h2>"
                + report_table(model, found, now) if found
                else f'<p class="muted">no report {h(q)}</p>')
    elif esp:
        ids = model.by_esp.get(esp, [])
        reports, pages = model.newest(ids, page, PAGE)
        body = (f"<h2>Reports of {h(esp)} ({len(ids)})</h2>"
                + report_table(model, reports, now) + pager("/search", {"esp": esp}, page, pages))
    else:
        esps = [f'<tr><td><a href="/search?{h(urlencode({"esp": e}))}">{h(e)}</a></td>'
                f'<td class="n">{len(ids)}</td></tr>' for e, ids in sorted(model.by_esp.items())]
        body = "<h2>ESPs</h2>" + table(("ESP", "reports"), esps, "no ESP yet")
    return f"<h1>Search</h1>{_status(model)}{body}"


def now() -> float:
    return time.time()
