"""The console's pages: each returns the inner HTML of `<main>` from what the store answers.

Pages show ids, states, agencies, times, ESP names, and a retraction's actor and reason; never
report content. Every list is counted and paged; every time says its zone (UTC).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from services.console.filters import LAST, SORTS, Filters
from services.console.html import (
    age,
    agency_link,
    badge,
    clock,
    h,
    pager,
    report_link,
    table,
    url,
    when,
)
from services.console.model import CORRECTIONS, FLOW, PRIORITIES, STATES, Report, Track
from services.console.queries import (
    KINDS,
    PAGE,
    Attention,
    Health,
    LetterRow,
    Paged,
    Queries,
    Waiting,
)
from shared.agencies import Agency

ATTENTION_PAGE = 10  # rows of the queue on the overview: it comes first, the rest below it
COLOURS = {"accepted": "#2b6cb0", "rejected": "#b7410e", "referred": "#276749",
           "retracted": "#6b46c1", "corrected": "#c53030"}


@dataclass(frozen=True)
class View:
    """What every page reads: the store at one moment, the registry, the console's state."""

    q: Queries
    agencies: Mapping[str, Agency]
    caught_up: bool
    trace_url: str = ""  # a trace UI's address with {trace_id}, or "" (no link)
    lag: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # service -> part -> n
    lag_error: str | None = None

    @property
    def now(self) -> float:
        return self.q.now


def _status(v: View) -> str:
    state = ("live" if v.caught_up
             else '<span class="badge pending">rebuilding from the topics</span>')
    return (f'<p class="status">read model: {v.q.tally("reports"):,} reports · {state} · '
            "times in UTC</p>")


def priority_name(priority: int | None) -> str:
    return PRIORITIES.get(priority if priority is not None else -1, "-")


# --- Overview -----------------------------------------------------------------------------


def overview(v: View, f: Filters, page: int, attention_page: int, kind: str) -> str:
    params = {**f.query(), "kind": kind}
    queue = v.q.attention(sorted(set(v.agencies) | v.q.agencies()), attention_page, kind,
                          size=ATTENTION_PAGE)
    since, until = f.window(v.now)
    # The line stops at the last whole minute (the one under way would fall towards 0); the
    # cards count up to now.
    end = until if until is not None else v.now // 60 * 60
    start = since if since is not None else end - 3600
    chart = v.q.chart(start, end)
    whole = v.q.chart(start, until if until is not None else end + 60, points=1)
    totals = whole[0][1] if whole else [0] * len(FLOW)
    cards = "".join(
        f'<div class="card" data-flow="{name}"><span class="n">{n:,}</span>'
        f'<span class="flow-{name}">{name}</span></div>'
        for name, n in zip(FLOW, totals, strict=True))
    return (
        f"<h1>Overview</h1>{_status(v)}"
        + attention(v, queue.page, queue.counts, kind, {**params, "page": page})
        + f'<section id="flow"><h2>Flow, {h(_range_words(f, start, end))}</h2>'
        f'<div class="cards">{cards}</div>{svg_chart(chart, start, end)}</section>'
        f'<section id="agencies"><h2>Agencies</h2>{agency_table(v)}</section>'
        f'<div class="two"><section id="letters"><h2>Dead letters</h2>{letter_counts(v)}'
        "</section>"
        f'<section id="lag"><h2>Consumer lag</h2>{lag_table(v)}</section></div>'
        + reports_section(v, f, page, {**params, "attention": attention_page}, "/")
    )


def _range_words(f: Filters, start: float, end: float) -> str:
    if f.last:
        return f"the last {f.last}"
    if f.since or f.until:
        return "from the time range"
    return "the last hour"


def attention(v: View, paged: Paged[Attention], counts: Mapping[str, int], kind: str,
              params: Mapping[str, object]) -> str:
    current = ' aria-current="true"'
    summary = " · ".join(
        (f'<a href="{url("/", {**params, "kind": k, "attention": 1})}#attention"'
         f'{current if k == kind else ""} data-kind="{k}">'
         f"{counts.get(k, 0):,}</a> {h(words)}") for k, (_, words) in KINDS.items())
    if kind:
        summary += f' · <a href="{url("/", {**params, "kind": ""})}#attention">all</a>'
    rows = [_attention_row(v, a) for a in paged.rows]
    return (
        '<section id="attention" class="attention"><h2>Needs attention</h2>'
        f'<p class="kinds">{summary}</p>'
        + table(("what", "agency", "report", "priority", "since", "detail"), rows,
                "nothing needs attention: every correction and referral is acknowledged in time, "
                "no agency's acks are refused, no dead letter in the last day", "queue")
        + pager("/", params, paged, "attention", "items") + "</section>")


def _attention_row(v: View, a: Attention) -> str:
    timeout = age(v.q.ack_timeout_s)
    detail = {
        "refused": f"acks refused: {h(a.detail)} since {clock(a.since)} "
                   f"({a.count:,} refused since the last accepted ack)",
        "escalated": f"{h(a.detail) or 'never re-sent'}, then escalated: people must act",
        "overdue": f"no ack after {timeout}" + (f"; {h(a.detail)}" if a.detail else ""),
        "unacknowledged": f"{a.count:,} referral{'s' * (a.count != 1)} unacknowledged after "
                          f"{timeout}; the oldest sent {when(a.since)}",
        "letters": f'<a href="{url("/deadletters", {"service": a.service, "cause": a.detail})}">'
                   f"{a.count:,} dead letter{'s' * (a.count != 1)} from {h(a.service)}</a>: "
                   f"{h(a.detail)}",
    }[a.kind]
    key = f"{a.kind}:{a.agency_id or a.service}:{a.report_id or a.detail}"
    return (f'<tr data-key="{h(key)}" data-kind="{a.kind}" data-agency="{h(a.agency_id or "")}">'
            f'<td>{badge(KINDS[a.kind][0])}</td><td>{agency_link(a.agency_id, v.agencies)}</td>'
            f"<td>{report_link(a.report_id)}</td>"
            f'<td><span class="label">priority </span>{h(priority_name(a.priority))}</td>'
            f'<td><span class="label">since </span>{when(a.since)}<br>'
            f'<span class="muted">{age(v.now - a.since)} ago</span></td>'
            f"<td>{detail}</td></tr>")


def svg_chart(chart: list[tuple[float, list[int]]], start: float, end: float,
              width: int = 720, height: int = 160) -> str:
    """One polyline a series over the buckets of `chart`; inline SVG, no script. Accepted is
    dashed and drawn last: it runs on top of referred when every report is referred."""
    top = max((max(counts) for _, counts in chart), default=0) or 1
    step = width / max(1, len(chart) - 1)
    lines = []
    for i in sorted(range(len(FLOW)), key=lambda i: FLOW[i] == "accepted"):
        name = FLOW[i]
        points = " ".join(f"{x * step:.1f},{height - counts[i] * (height - 10) / top:.1f}"
                          for x, (_, counts) in enumerate(chart))
        dash = ' stroke-dasharray="7 4"' if name == "accepted" else ""
        lines.append(f'<polyline class="series" data-series="{name}" fill="none" '
                     f'stroke="{COLOURS[name]}" stroke-width="2"{dash} points="{points}"/>')
    legend = "".join(f'<span class="flow-{n}"><i></i>{n}</span>' for n in FLOW)
    per = max(1, round((end - start) / 60 / max(1, len(chart))))
    return (
        f'<figure class="chart"><svg viewBox="-64 -8 {width + 76} {height + 32}" '
        f'role="img" aria-label="reports per {per} min, {h(_utc(start))} to {h(_utc(end))}">'
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" class="axis"/>'
        f'<line x1="0" y1="0" x2="0" y2="{height}" class="axis"/>'
        f'<text x="-8" y="12" text-anchor="end">{top}</text>'
        f'<text x="-8" y="28" text-anchor="end">/{per} min</text>'
        f'<text x="-8" y="{height}" text-anchor="end">0</text>'
        f'<text x="0" y="{height + 20}">{h(_utc(start))}</text>'
        f'<text x="{width}" y="{height + 20}" text-anchor="end">{h(_utc(end))}</text>'
        f'{"".join(lines)}</svg><figcaption class="legend">{legend}</figcaption></figure>'
    )


def _utc(at: float) -> str:
    return f"{datetime.fromtimestamp(at, UTC):%H:%M} UTC"


def agency_table(v: View) -> str:
    ids = sorted(set(v.agencies) | v.q.agencies())
    rows = [_agency_row(v, v.q.health(a)) for a in ids]
    return table(("agency", "referrals sent", "acknowledged", "last ack", "acks refused",
                  "corrections sent", "acknowledged", "overdue", "escalated", "next due"),
                 rows, "no agency yet", "agencies")


def _agency_row(v: View, health: Health) -> str:
    agency = v.agencies.get(health.agency_id)
    can_ack = "" if agency is None or agency.verify_keys else (
        ' <span class="badge escalated">cannot acknowledge</span>')
    rate = f" ({health.ack_rate:.0%})" if health.ack_rate is not None else ""
    return (
        f'<tr data-key="{h(health.agency_id)}" data-agency="{h(health.agency_id)}">'
        f"<td>{agency_link(health.agency_id, v.agencies)}{can_ack}</td>"
        f'<td class="n" data-col="referred">{health.referred:,}</td>'
        f'<td class="n" data-col="referrals-acked">{health.referrals_acked:,}{rate}</td>'
        f'<td data-col="last-ack">{when(health.last_ack_at)}</td>'
        f'<td data-col="refused">{refused_words(health)}</td>'
        f'<td class="n" data-col="sent">{health.corrections:,}</td>'
        f'<td class="n" data-col="acked">{health.acked:,}</td>'
        f'<td class="n{" warn" if health.overdue else ""}" data-col="overdue">'
        f"{health.overdue:,}</td>"
        f'<td class="n{" alert" if health.escalated else ""}" data-col="escalated">'
        f"{health.escalated:,}</td>"
        f'<td data-col="next-due">{due_words(health, v.now)}</td></tr>')


def refused_words(health: Health) -> str:
    if health.refusing:
        return (f'<span class="badge escalated long" data-state="refusing">acks refused: '
                f"{h(health.refused_cause or '?')} since {clock(health.refused_since or 0)}"
                "</span>")
    if health.refused:
        return f'<span class="muted">{health.refused:,} earlier, acknowledged since</span>'
    return '<span class="muted">none</span>'


def due_words(health: Health, now: float) -> str:
    if health.next_due is None:
        return '<span class="muted">-</span>'
    at, what, report_id = health.next_due
    late = " (late)" if at < now else ""
    return f"{h(what)} {when(at)}{late} · {report_link(report_id)}"


def letter_counts(v: View) -> str:
    rows = [f'<tr data-key="{h(service)}:{h(topic)}"><td>'
            f'<a href="{url("/deadletters", {"service": service})}">{h(service)}</a></td>'
            f"<td>{h(topic)}</td><td class='n'>{n:,}</td></tr>"
            for (service, topic), n in sorted(v.q.letter_counts().items())]
    return (table(("service", "topic", "letters"), rows, "none")
            + '<p><a href="/deadletters">every dead letter</a></p>')


def lag_table(v: View) -> str:
    lag, error = v.lag, v.lag_error
    rows = [f'<tr data-key="{h(service)}"><td>{h(service)}</td>'
            f"<td class='n'>{sum(parts.values()):,}</td><td class='muted'>"
            f"{h(', '.join(f'{k}: {n}' for k, n in sorted(parts.items())))}</td></tr>"
            for service, parts in sorted(lag.items())]
    note = f'<p class="muted">lag unknown: {h(error)}</p>' if error else ""
    return table(("service", "lag", "groups and topics"), rows,
                 "no committed consumer groups yet") + note


# --- Reports lists ------------------------------------------------------------------------


def reports_section(v: View, f: Filters, page: int, params: Mapping[str, object],
                    path: str) -> str:
    found = v.q.reports(f, page)
    return (
        f'<section id="reports"><h2>Reports</h2>{filter_form(v, f, path, params)}'
        + report_table(v, found.rows, f, path, params)
        + pager(path, {**params, **f.query()}, found, "page", "reports") + "</section>")


def filter_form(v: View, f: Filters, path: str, params: Mapping[str, object]) -> str:
    def select(name: str, label: str, options: list[tuple[str, str]], chosen: str) -> str:
        items = "".join(f'<option value="{h(value)}"{" selected" if value == chosen else ""}>'
                        f"{h(text)}</option>" for value, text in options)
        return f'<label>{label} <select name="{name}">{items}</select></label>'

    agencies = sorted(set(v.agencies) | v.q.agencies())
    keep = "".join(f'<input type="hidden" name="{h(k)}" value="{h(value)}">'
                   for k, value in params.items()
                   if k == "kind" and value not in (None, ""))
    since = f.since.strftime("%Y-%m-%dT%H:%M") if f.since else ""
    until = f.until.strftime("%Y-%m-%dT%H:%M") if f.until else ""
    return (
        f'<form class="filters" method="get" action="{h(path)}#reports">{keep}'
        + select("state", "state", [("", "any"), *((s, s) for s in STATES)], f.state)
        + select("correction", "correction", [("", "any"), *((c, c) for c in CORRECTIONS),
                                              ("overdue", "overdue")], f.correction)
        + select("agency", "agency", [("", "any"), *((a, a) for a in agencies)], f.agency)
        + f'<label>ESP <input name="esp" value="{h(f.esp)}" size="12"></label>'
        + select("priority", "priority", [("", "any"), *((p, p) for p in PRIORITIES.values())],
                 priority_name(f.priority) if f.priority is not None else "")
        + select("last", "first seen in", [("", "any time"), *((k, f"the last {k}")
                                                               for k in LAST)], f.last)
        + f'<label>from <input type="datetime-local" name="since" value="{h(since)}"></label>'
        + f'<label>to <input type="datetime-local" name="until" value="{h(until)}"></label>'
        + select("sort", "sort by", list(SORTS.items()), f.sort)
        + select("order", "order", [("desc", "newest / highest first"),
                                    ("asc", "oldest / lowest first")], f.order)
        + f'<button>filter</button> <a href="{h(path)}#reports">clear</a>'
        '<span class="muted"> (times UTC)</span></form>')


def report_table(v: View, reports: list[Report], f: Filters | None = None, path: str = "/",
                 params: Mapping[str, object] | None = None) -> str:
    def head(column: str, label: str) -> str:
        if f is None:
            return label
        ascending = f.sort == column and f.order == "asc"
        order = "desc" if ascending else "asc" if f.sort == column else "desc"
        arrow = ("" if f.sort != column else " &uarr;" if ascending else " &darr;")
        sort = f' aria-sort="{"ascending" if ascending else "descending"}"' if (
            f.sort == column) else ""
        return (f'<a href="{url(path, {**(params or {}), **f.query(sort=column, order=order)})}'
                f'#reports"{sort}>{label}{arrow}</a>')

    rows = []
    for report in reports:
        public = ' <span class="badge public">public</span>' if report.source == "public" else ""
        states = " ".join(
            f'<span class="pair">{h(a)} {badge(t.correction_state(v.now, v.q.ack_timeout_s))}'
            f"</span>" if t.correction() else f'<span class="pair">{h(a)}</span>'
            for a, t in sorted(report.agencies.items()))
        rows.append(f'<tr data-key="{h(report.report_id)}" data-report="{h(report.report_id)}">'
                    f"<td>{report_link(report.report_id)}</td>"
                    f"<td>{h(report.esp or '-')}{public}</td>"
                    f"<td>{badge(report.state)}</td>"
                    f"<td>{badge(report.retraction_state())}</td>"
                    f"<td>{states or '-'}</td><td>{h(priority_name(report.priority))}</td>"
                    f"<td>{when(report.first)}</td></tr>")
    return table(("report", "ESP", "state", "retraction",
                  "agencies (correction)", head("priority", "priority"),
                  head("first", "first seen")), rows, "no reports match", "reports")


# --- Report -------------------------------------------------------------------------------


def report_page(v: View, report: Report) -> str:
    rows = [_track_row(v, a, t) for a, t in sorted(report.agencies.items())]
    supplements = [f'<tr data-key="{i}"><td>{h(kind)}</td><td>{badge(label)}</td>'
                   f"<td>{h(analyst)}</td><td>{when(added)}</td></tr>"
                   for i, (kind, label, analyst, added) in enumerate(report.supplements)]
    events = sorted(report.events, key=lambda e: e[0])
    timeline = [f'<tr data-key="{i}"><td>{when(at)}</td><td>{h(what)}</td>'
                f"<td>{agency_link(agency, v.agencies) if agency else ''}</td>"
                f"<td>{h(detail or '')}</td></tr>"
                for i, (at, what, agency, detail) in enumerate(events[:1000])]
    more = (f'<p class="muted">{len(events) - 1000:,} later entries not shown</p>'
            if len(events) > 1000 else "")
    esp = (f'<a href="{url("/", {"esp": report.esp})}">{h(report.esp)}</a>'
           if report.esp else "-")
    retraction = report.retraction
    retracted = (
        f"<dt>retracted</dt><dd>{when(retraction.at)} by {h(retraction.requested_by)} "
        f'<span class="actor">{h(retraction.actor)}</span></dd>'
        f'<dt>reason</dt><dd class="reason">{h(retraction.reason)}</dd>') if retraction else (
        f"<dt>retraction</dt><dd>requested {when(report.requested)}</dd>"
        if report.requested else "")
    trace = (f'<dt>trace</dt><dd><a href="{h(v.trace_url.format(trace_id=report.trace_id))}" '
             f'rel="noopener">{h(report.trace_id)}</a></dd>'
             if v.trace_url and report.trace_id else "")
    rid = quote(report.report_id, safe="")
    return (
        f'<h1>Report <span class="id">{h(report.report_id)}</span></h1>{_status(v)}'
        f'<dl class="facts"><dt>state</dt><dd data-col="state">{badge(report.state)}</dd>'
        f'<dt>retraction</dt><dd data-col="retraction">'
        f"{badge(report.retraction_state()) if report.retraction_state() else 'none'}</dd>"
        f'<dt>correction</dt><dd data-col="correction">{badge(report.correction() or "")}</dd>'
        f'{retracted}<dt>source</dt><dd data-col="source">{source(report)}</dd>'
        f"<dt>ESP</dt><dd>{esp}</dd><dt>priority</dt>"
        f"<dd>{h(priority_name(report.priority))}</dd><dt>first seen</dt>"
        f"<dd>{when(report.first)}</dd>{trace}</dl>"
        f'<p class="exports">delivery record: <a href="/reports/{rid}/delivery.csv">CSV</a> · '
        f'<a href="/reports/{rid}/delivery.json">JSON</a></p>'
        "<section><h2>Agencies</h2>" + table(
            ("agency", "referral", "amendments", "correction", "outcome"), rows,
            "not referred to any agency") + "</section>"
        "<section><h2>Supplements</h2>" + table(
            ("kind", "label", "analyst", "added"), supplements, "none") + "</section>"
        f"<section><h2>Timeline ({len(events):,})</h2>" + table(
            ("time", "what", "agency", "detail"), timeline, "nothing yet") + more + "</section>"
    )


def _track_row(v: View, agency_id: str, track: Track) -> str:
    referral = ("-" if track.referral_at is None else
                f"sent {when(track.referral_at)} " + badge(track.referral_state()))
    amendments = (f"{track.amendments} sent, {track.amendments_acked} acknowledged"
                  if track.amendments else "-")
    correction = track.correction_state(v.now, v.q.ack_timeout_s)
    sent = f" sent {when(track.correction_at)}" if track.correction_at is not None else ""
    acked = (f" · acknowledged {when(track.correction_acked_at)}"
             if track.correction_acked_at is not None else "")
    return (f'<tr data-key="{h(agency_id)}" data-agency="{h(agency_id)}">'
            f"<td>{agency_link(agency_id, v.agencies)}</td>"
            f'<td class="referral">{referral}</td><td>{h(amendments)}</td>'
            f'<td class="correction">{badge(correction)}{sent}{acked}</td>'
            f"<td>{h(track.outcome or '-')}</td></tr>")


def source(report: Report) -> str:
    return ('<span class="badge public">public</span> the public form: triaged by an analyst'
            if report.source == "public" else "an ESP")


# --- Triage -------------------------------------------------------------------------------


def triage_page(v: View, page: int) -> str:
    """Reports from the public waiting for an analyst (the analyst API releases or closes
    them), oldest first."""
    waiting = v.q.triage(page)
    rows = [f'<tr data-key="{h(r)}" data-report="{h(r)}"><td>{report_link(r)}</td>'
            f'<td>{when(at)}</td><td class="n">{age(v.now - at)}</td></tr>'
            for r, at in waiting.rows]
    return (
        f"<h1>Triage</h1>{_status(v)}"
        '<section id="triage"><h2>Reports from the public waiting for an analyst, oldest first'
        "</h2>" + table(("report", "waiting since", "age"), rows, "none: every report from the "
                        "public was released, closed or withdrawn")
        + pager("/triage", {}, waiting, "page", "reports") + "</section>")


# --- Agencies -----------------------------------------------------------------------------


def agencies_page(v: View) -> str:
    return (f"<h1>Agencies</h1>{_status(v)}"
            f'<section id="agencies"><h2>Health</h2>{agency_table(v)}</section>')


def agency_page(v: View, agency_id: str, pages: Mapping[str, int]) -> str:
    agency = v.agencies.get(agency_id)
    health = v.q.health(agency_id)
    path = f"/agencies/{quote(agency_id, safe='')}"
    name = f' <span class="name">{h(agency.name)}</span>' if agency and agency.name else ""
    can_ack = "" if agency is None or agency.verify_keys else (
        '<p><span class="badge escalated">cannot acknowledge</span> no response key is '
        "registered for this agency: its corrections are re-sent, then escalated</p>")
    refusing = (f'<p class="refusing">{refused_words(health)} · {health.refused_lately:,} '
                "refused since its last accepted ack</p>") if health.refusing else ""
    rate = f"{health.ack_rate:.0%}" if health.ack_rate is not None else "-"
    timeout = age(v.q.ack_timeout_s)
    pending = v.q.waiting(agency_id, "pending", pages.get("pending", 1))
    escalated = v.q.waiting(agency_id, "escalated", pages.get("escalated", 1))
    outcomes = v.q.outcomes(agency_id, pages.get("outcomes", 1))
    refused = v.q.letters(pages.get("refused", 1), agency=agency_id)
    keep = dict(pages)
    return (
        f'<h1>Agency <span class="id">{h(agency_id)}</span>{name}</h1>{_status(v)}{can_ack}'
        f"{refusing}"
        '<dl class="facts">'
        f'<dt>referrals sent</dt><dd data-col="referred">{health.referred:,}</dd>'
        f'<dt>referrals acknowledged</dt><dd data-col="referrals-acked">'
        f"{health.referrals_acked:,} ({rate})</dd>"
        f'<dt>referrals unacknowledged after {timeout}</dt><dd data-col="unacknowledged">'
        f"{health.unacknowledged:,}</dd>"
        f'<dt>last ack seen</dt><dd data-col="last-ack">{when(health.last_ack_at)}</dd>'
        f'<dt>acks refused</dt><dd data-col="refused">{refused_words(health)}</dd>'
        f'<dt>notices sent</dt><dd>{health.referred:,} referrals, {health.amendments:,} '
        f"amendments, {health.corrections:,} corrections</dd>"
        f'<dt>corrections acknowledged</dt><dd data-col="acked">{health.acked:,}</dd>'
        f'<dt>overdue (no ack after {timeout})</dt><dd data-col="overdue">{health.overdue:,}</dd>'
        f'<dt>escalated</dt><dd data-col="escalated">{health.escalated:,}'
        f"{f' (and {health.late:,} acknowledged late)' if health.late else ''}</dd>"
        f'<dt>next re-send or escalation due</dt><dd data-col="next-due">'
        f"{due_words(health, v.now)}</dd></dl>"
        f'<p class="exports">backlog (everything waiting on this agency): '
        f'<a href="{path}/backlog.csv">CSV</a> · <a href="{path}/backlog.json">JSON</a></p>'
        f'<section id="refused"><h2>Acks refused ({refused.total:,})</h2>'
        + letters_table(v, refused.rows, "none refused")
        + pager(path, keep, refused, "refused", "refused acks") + "</section>"
        f'<section id="unacknowledged"><h2>Unacknowledged corrections ({pending.total:,})</h2>'
        + waiting_table(v, pending.rows, "none: every correction is acknowledged or escalated")
        + pager(path, keep, pending, "pending", "corrections") + "</section>"
        f'<section id="escalated"><h2>Escalated corrections ({escalated.total:,})</h2>'
        + waiting_table(v, escalated.rows, "none")
        + pager(path, keep, escalated, "escalated", "corrections") + "</section>"
        f'<section id="outcomes"><h2>Outcomes ({outcomes.total:,})</h2>'
        + table(("time", "report", "outcome"), [
            f'<tr data-key="{h(r)}"><td>{when(at)}</td><td>{report_link(r)}</td>'
            f"<td>{h(o)}</td></tr>" for at, r, o in outcomes.rows], "none yet")
        + pager(path, keep, outcomes, "outcomes", "outcomes") + "</section>"
        + _referrals(v, agency_id, path, keep)
    )


def _referrals(v: View, agency_id: str, path: str, pages: Mapping[str, int]) -> str:
    f = Filters(agency=agency_id)
    found = v.q.reports(f, pages.get("page", 1))
    return (f'<section id="referrals"><h2>Reports referred ({found.total:,})</h2>'
            f'<p><a href="{url("/", f.query())}#reports">filter and sort them</a></p>'
            + report_table(v, found.rows) + pager(path, pages, found, "page", "reports")
            + "</section>")


def waiting_table(v: View, rows: list[Waiting], empty: str) -> str:
    out = []
    for w in rows:
        report = v.q.report(w.report_id)
        track = report.agencies.get(w.agency_id) if report else None
        state = track.correction_state(v.now, v.q.ack_timeout_s) if track else w.state
        out.append(f'<tr data-key="{h(w.report_id)}" data-report="{h(w.report_id)}">'
                   f"<td>{report_link(w.report_id)}</td><td>{h(priority_name(w.priority))}</td>"
                   f"<td>{when(w.since)}</td><td class='n'>{age(v.now - w.since)}</td>"
                   f"<td>{badge(state)}</td></tr>")
    return table(("report", "priority", "since", "age", "state"), out, empty)


# --- Dead letters -------------------------------------------------------------------------


def letters_table(v: View, rows: list[LetterRow], empty: str) -> str:
    out = [f'<tr data-key="{h(row.read_from)}"><td>{when(x.failed_at)}</td><td>{h(x.service)}</td>'
           f"<td>{h(x.topic)}[{x.partition}]@{x.offset}</td><td>{report_link(x.key)}</td>"
           f"<td>{agency_link(x.agency, v.agencies) if x.agency else '-'}</td>"
           f"<td>{h(x.cause)}</td></tr>" for row in rows for x in [row.letter]]
    return table(("failed at", "service", "record", "key", "agency", "cause"), out, empty)


def letters_page(v: View, service: str, cause: str, agency: str, page: int) -> str:
    found = v.q.letters(page, service, cause, agency)
    services = sorted({s.split(":", 1)[0] for s in v.q.tallies("letters:")})
    options = "".join(f'<option value="{h(s)}"{" selected" if s == service else ""}>{h(s)}'
                      "</option>" for s in ["", *services])
    params = {"service": service, "cause": cause, "agency": agency}
    return (
        f"<h1>Dead letters</h1>{_status(v)}"
        '<p class="muted">Records a service could not handle, and records the console refused '
        "to show (service console), with their cause and origin; never their content. "
        "<code>tipline deadletters show</code> and <code>requeue</code> act on them.</p>"
        '<section id="letters"><form class="filters" method="get" action="/deadletters">'
        f'<label>service <select name="service">{options}</select></label>'
        f'<label>cause contains <input name="cause" value="{h(cause)}"></label>'
        + (f'<input type="hidden" name="agency" value="{h(agency)}">' if agency else "")
        + '<button>filter</button> <a href="/deadletters">clear</a></form>'
        + letters_table(v, found.rows, "no dead letter matches")
        + pager("/deadletters", params, found, "page", "letters") + "</section>")


# --- Search -------------------------------------------------------------------------------


def search_page(v: View, q: str, esp: str, page: int) -> str:
    if q:
        found = v.q.find(q, page)
        body = (f"<h2>Reports whose id starts with {h(q)}</h2>"
                + report_table(v, found.rows) + pager("/search", {"q": q}, found, "page",
                                                      "reports"))
    else:
        esps = v.q.esps(esp)
        found = v.q.by_esps(esps, page)
        listed = [f'<tr data-key="{h(e)}"><td><a href="{url("/", {"esp": e})}#reports">'
                  f'{h(e)}</a></td><td class="n">{n:,}</td></tr>'
                  for e, n in sorted(esps.items())[:PAGE * 4]]
        more = (f'<p class="muted">and {len(esps) - PAGE * 4:,} more ESPs: type more of the '
                "name</p>") if len(esps) > PAGE * 4 else ""
        body = (f"<h2>ESPs{' named ' + h(esp) + '…' if esp else ''} ({len(esps):,})</h2>"
                + table(("ESP", "reports"), listed, "no ESP matches") + more
                + "<h2>Their reports, newest first</h2>" + report_table(v, found.rows)
                + pager("/search", {"esp": esp}, found, "page", "reports"))
    return f"<h1>Search</h1>{_status(v)}<section>{body}</section>"
