"""The console's HTTP app: thin routes over the store's read side and the page functions.

Every page but the login needs a session cookie (services/console/sessions.py) of an analyst or
an operator, checked at every request against sign-outs and password changes (Redis away: 503
with Retry-After); both roles only read here. A request with `X-Console-Fragment: 1` gets the page's
`<main>` alone (the live script's refresh). Pages are made on reader threads, each with its own
SQLite connection, so a slow page never holds the event loop. Static files are the service's own.
"""

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse

from services.console import exports, html, pages, sessions
from services.console.filters import BadFilter, Filters, page_of
from services.console.queries import KINDS, Queries
from services.console.store import connect
from shared.agencies import Agency, AgencyRegistry
from shared.analysts import AnalystDirectory
from shared.http import UNAVAILABLE, answer_unavailable
from shared.logins import LoginRefused

STATIC = Path(__file__).resolve().parent / "static"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Report ids are in the URLs: no referrer leaves the site. (Not "no-referrer", which makes
    # a browser send "Origin: null" with the console's own sign-in form.)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
READERS = 2  # threads making pages, each with its own connection
T = TypeVar("T")


@dataclass
class Live:
    """How far the read model is, as the follower and the lag poller tell it."""

    version: int = 0
    caught_up: bool = False
    lag: dict[str, dict[str, int]] = field(default_factory=dict)
    lag_error: str | None = None


class Readers:
    """Reader threads, each with its own read connection to the store."""

    def __init__(self, path: Path, ack_timeout_s: float, max_resends: int) -> None:
        self.path, self.ack_timeout_s, self.max_resends = path, ack_timeout_s, max_resends
        self.pool = ThreadPoolExecutor(READERS, thread_name_prefix="console-page")
        self.local = threading.local()

    def queries(self) -> Queries:
        inode = self.path.stat().st_ino  # a store moved aside: connect to the new file
        db, held = getattr(self.local, "db", None), getattr(self.local, "inode", None)
        if db is None or held != inode:
            if db is not None:
                db.close()
            db, self.local.db, self.local.inode = None, None, None
            db = self.local.db = connect(self.path, readonly=True)
            self.local.inode = inode
        return Queries(db, time.time(), self.ack_timeout_s, self.max_resends)

    async def run(self, fn: Callable[[Queries], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: fn(self.queries()))

    def stream(self, rows: Callable[[Queries], Iterator[T]]) -> Iterator[T]:
        """`rows` read lazily on a connection of their own, closed at the end (an export)."""
        db = connect(self.path, readonly=True)
        try:
            yield from rows(Queries(db, time.time(), self.ack_timeout_s, self.max_resends))
        finally:
            db.close()


@dataclass
class Console:
    readers: Readers
    registry: AgencyRegistry
    directory: AnalystDirectory
    sessions: sessions.Sessions
    live: Live
    session_ttl_s: float = 8 * 3600.0
    trace_url: str = ""

    def agencies(self) -> dict[str, Agency]:
        self.registry.get("")  # re-read when the routing file changed
        return self.registry.agencies

    def view(self, q: Queries) -> pages.View:
        return pages.View(q, self.agencies(), self.live.caught_up, self.trace_url,
                          self.live.lag, self.live.lag_error)


async def console(request: Request) -> Console:  # async: no worker thread a request
    return request.app.state.console  # type: ignore[no-any-return]


Svc = Annotated[Console, Depends(console)]


class SignIn(Exception):
    """No valid session: a page goes to the login, a fragment or JSON call answers 401."""


async def session(request: Request, svc: Svc) -> sessions.Session:
    found = await svc.sessions.current(request.cookies.get(sessions.COOKIE), time.time())
    if found is None:
        raise SignIn()
    return found


Who = Annotated[sessions.Session, Depends(session)]
router = APIRouter()


def render(request: Request, svc: Console, who: sessions.Session, title: str,
           body: str, status: int = 200) -> Response:
    if request.headers.get("X-Console-Fragment") == "1":
        return HTMLResponse(body, status_code=status, headers={
            **HEADERS, "X-Console-Version": str(svc.live.version)})
    return HTMLResponse(html.layout(title, body, svc.live.version, who.analyst_id, who.role),
                        status_code=status, headers=HEADERS)


@router.get("/")
async def overview(request: Request, svc: Svc, who: Who) -> Response:
    query = request.query_params
    f, page, attention = Filters.parse(query), page_of(query), page_of(query, "attention")
    kind = query.get("kind", "")
    if kind and kind not in KINDS:
        raise BadFilter(f"kind must be one of {', '.join(KINDS)}; not {kind[:40]!r}")
    canonical = {**f.query(), **{name: str(value) for name, value in (
        ("kind", kind), ("attention", attention), ("page", page)) if value not in ("", 1)}}
    if dict(query) != canonical and request.headers.get("X-Console-Fragment") != "1":
        # A form sends its empty fields too: the view's own URL, to share, without them.
        return RedirectResponse(f"/?{urlencode(canonical)}" if canonical else "/", 303)
    body = await svc.readers.run(
        lambda q: pages.overview(svc.view(q), f, page, attention, kind))
    return render(request, svc, who, "Overview", body)


@router.get("/agencies")
async def agencies(request: Request, svc: Svc, who: Who) -> Response:
    body = await svc.readers.run(lambda q: pages.agencies_page(svc.view(q)))
    return render(request, svc, who, "Agencies", body)


@router.get("/agencies/{agency_id}")
async def agency(request: Request, agency_id: str, svc: Svc, who: Who) -> Response:
    numbers = {n: page_of(request.query_params, n)
               for n in ("page", "pending", "escalated", "outcomes", "refused")}

    def make(q: Queries) -> str | None:
        if agency_id not in svc.agencies() and agency_id not in q.agencies():
            return None
        return pages.agency_page(svc.view(q), agency_id, numbers)

    body = await svc.readers.run(make)
    if body is None:
        return render(request, svc, who, "No such agency", html.refused(
            f"no agency {agency_id}: neither the registry nor the topics name it"), 404)
    return render(request, svc, who, f"Agency {agency_id}", body)


@router.get("/agencies/{agency_id}/backlog.{kind}")
async def backlog(agency_id: str, kind: str, svc: Svc, who: Who) -> Response:
    format_of(kind)
    rows = svc.readers.stream(lambda q: q.backlog(agency_id))
    return export(f"backlog-{agency_id}", kind, exports.BacklogRow,
                  (exports.backlog_row(w) for w in rows))


@router.get("/reports/{report_id}")
async def report(request: Request, report_id: str, svc: Svc, who: Who) -> Response:
    def make(q: Queries) -> str:
        found = q.report(report_id)
        if found is None:
            return (f"<h1>Report {html.h(report_id)}</h1><p class='muted'>not in the read model "
                    "(yet): this page shows it as soon as an event of it is read</p>")
        return pages.report_page(svc.view(q), found)

    body = await svc.readers.run(make)
    return render(request, svc, who, f"Report {report_id}", body)


@router.get("/reports/{report_id}/delivery.{kind}")
async def delivery(report_id: str, kind: str, svc: Svc, who: Who) -> Response:
    format_of(kind)

    def make(q: Queries) -> list[exports.DeliveryRow] | None:
        found = q.report(report_id)
        return None if found is None else exports.delivery(found, svc.agencies(), q.now,
                                                           q.ack_timeout_s)

    rows = await svc.readers.run(make)
    if rows is None:
        raise HTTPException(404, "no such report in the read model")
    return export(f"delivery-{report_id}", kind, exports.DeliveryRow, rows)


@router.get("/triage")
async def triage(request: Request, svc: Svc, who: Who) -> Response:
    page = page_of(request.query_params)
    body = await svc.readers.run(lambda q: pages.triage_page(svc.view(q), page))
    return render(request, svc, who, "Triage", body)


@router.get("/search")
async def search(request: Request, svc: Svc, who: Who, q: str = "", esp: str = "") -> Response:
    q, esp = q.strip()[:200], esp.strip()[:200]
    page = page_of(request.query_params)
    if q and request.headers.get("X-Console-Fragment") != "1" and await svc.readers.run(
            lambda queries: queries.report(q) is not None):
        return RedirectResponse(f"/reports/{quote(q, safe='')}", 303)
    body = await svc.readers.run(lambda queries: pages.search_page(svc.view(queries), q, esp,
                                                                   page))
    return render(request, svc, who, "Search", body)


@router.get("/deadletters")
async def deadletters(request: Request, svc: Svc, who: Who, service: str = "", cause: str = "",
                      agency: str = "") -> Response:
    page = page_of(request.query_params)
    service, cause, agency = service.strip()[:100], cause.strip()[:200], agency.strip()[:100]
    body = await svc.readers.run(
        lambda q: pages.letters_page(svc.view(q), service, cause, agency, page))
    return render(request, svc, who, "Dead letters", body)


@router.get("/live/version")
async def version(svc: Svc, who: Who) -> Response:
    return JSONResponse({"version": svc.live.version, "caught_up": svc.live.caught_up,
                         "at": time.time()}, headers=HEADERS)


@router.get("/login")
async def login_form(svc: Svc, next: str = "/") -> Response:
    return HTMLResponse(html.layout("Sign in", html.login(next_url=_local(next)),
                                    svc.live.version), headers=HEADERS)


@router.post("/login")
async def login(request: Request, svc: Svc) -> Response:
    form = await request.form()
    analyst_id, password = str(form.get("analyst_id", "")), str(form.get("password", ""))
    next_url = _local(str(form.get("next", "/")))
    if _foreign(request):  # another site's page posting the form: no session comes of it
        return HTMLResponse(html.layout("Sign in", html.login(
            "sign in from the console's own page", next_url), 0), status_code=403,
            headers=HEADERS)
    address = request.client.host if request.client else "unknown"
    try:
        ok = bool(analyst_id) and await svc.directory.verify(analyst_id, password, address)
        role = await svc.directory.role(analyst_id) if ok else ""
        cookie = await svc.sessions.open(analyst_id, role, time.time()) if ok else ""
    except LoginRefused as exc:
        return HTMLResponse(html.layout("Sign in", html.login(exc.reason, next_url), 0),
                            status_code=exc.status, headers={**HEADERS,
                                                      "Retry-After": str(exc.retry_after_s)})
    except UNAVAILABLE:  # the staff directory (Redis) away: try again, never "wrong password"
        return HTMLResponse(html.layout("Sign in", html.login(
            "sign-in is unavailable for a moment: try again", next_url), 0), status_code=503,
            headers={**HEADERS, "Retry-After": "2"})
    if not ok:
        return HTMLResponse(html.layout("Sign in", html.login(
            "unknown analyst or wrong password", next_url), 0), status_code=401, headers=HEADERS)
    response = RedirectResponse(next_url, 303, headers=HEADERS)
    response.set_cookie(sessions.COOKIE, cookie, max_age=int(svc.session_ttl_s), httponly=True,
                        samesite="strict", path="/",
                        secure=svc.sessions.secure or request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, svc: Svc) -> Response:
    found = await svc.sessions.current(request.cookies.get(sessions.COOKIE), time.time())
    if found is not None:  # the cookie ends here, and with it every session of this person
        await svc.sessions.close(found, time.time())
    response = RedirectResponse("/login", 303, headers=HEADERS)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(status_code=204)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or path.suffix not in TYPES or not path.is_file():
        raise HTTPException(404, "not found")
    return Response(path.read_bytes(), media_type=TYPES[path.suffix],
                    headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


def format_of(kind: str) -> None:
    if kind not in ("csv", "json"):
        raise HTTPException(404, "exports are .csv or .json")


def export(name: str, kind: str, model: type[Any], rows: Any) -> Response:
    body: Iterator[str] = exports.as_csv(model, rows) if kind == "csv" else exports.as_json(rows)
    media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]
    return StreamingResponse(body, media_type=media, headers={
        **HEADERS, "Content-Disposition": f'attachment; filename="{safe}.{kind}"'})


def _foreign(request: Request) -> bool:
    """Posted from another site's page, as the browser tells: Sec-Fetch-Site, or where a browser
    sends none, an Origin of another host (or "null"). A client that sends neither is no
    browser, and no page can make it post."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")  # "none": typed or bookmarked by the user
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host", "")


def _local(url: str) -> str:
    """Only a path on this site after the login (never another site)."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/"


def create_api(svc: Console) -> FastAPI:
    api = FastAPI(title="tipline console", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None)
    api.state.console = svc
    api.include_router(router)
    for away in UNAVAILABLE:  # Redis away while a session is checked: 503, retry
        api.add_exception_handler(away, answer_unavailable)

    @api.exception_handler(SignIn)
    async def sign_in(request: Request, exc: SignIn) -> Response:
        if request.headers.get("X-Console-Fragment") == "1" or request.url.path.startswith(
                "/live/"):
            return JSONResponse({"detail": "sign in"}, status_code=401, headers=HEADERS)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303, headers=HEADERS)

    @api.exception_handler(BadFilter)
    async def bad_filter(request: Request, exc: BadFilter) -> Response:
        body = html.refused(str(exc))
        if request.headers.get("X-Console-Fragment") == "1":
            return HTMLResponse(body, status_code=400, headers=HEADERS)
        return HTMLResponse(html.layout("Cannot show that", body, svc.live.version),
                            status_code=400, headers=HEADERS)

    @api.exception_handler(sqlite3.OperationalError)
    async def store_busy(request: Request, exc: sqlite3.OperationalError) -> Response:
        # The store's file busy or its disk away: try again shortly.
        return JSONResponse({"detail": f"the console's store is unavailable: {exc}"},
                            status_code=503, headers={**HEADERS, "Retry-After": "5"})

    return api
