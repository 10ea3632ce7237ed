"""The console's HTTP app: thin routes over the read model and the page functions.

Every page but the login needs a session cookie (services/console/sessions.py) of an analyst or
an operator; both roles only read here. A request with `X-Console-Fragment: 1` gets the page's
`<main>` alone (the live script's refresh). Static files are the service's own.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from services.console import pages, sessions
from services.console.model import ReadModel
from shared.agencies import AgencyRegistry
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


@dataclass
class Console:
    model: ReadModel
    registry: AgencyRegistry
    directory: AnalystDirectory
    sessions: sessions.Sessions
    session_ttl_s: float = 8 * 3600.0


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
           body: str) -> Response:
    if request.headers.get("X-Console-Fragment") == "1":
        return HTMLResponse(body, headers={**HEADERS,
                                           "X-Console-Version": str(svc.model.version)})
    return HTMLResponse(pages.layout(title, body, svc.model.version, who.analyst_id, who.role),
                        headers=HEADERS)


def page_number(page: int) -> int:
    return max(1, min(page, 100_000))


@router.get("/")
async def overview(request: Request, svc: Svc, who: Who, page: int = 1) -> Response:
    body = pages.overview(svc.model, _agencies(svc), page_number(page), time.time())
    return render(request, svc, who, "Overview", body)


@router.get("/agencies")
async def agencies(request: Request, svc: Svc, who: Who) -> Response:
    return render(request, svc, who, "Agencies",
                pages.agencies_page(svc.model, _agencies(svc), time.time()))


@router.get("/agencies/{agency_id}")
async def agency(request: Request, agency_id: str, svc: Svc, who: Who, page: int = 1) -> Response:
    known = _agencies(svc)
    if agency_id not in known and agency_id not in svc.model.agencies:
        raise HTTPException(404, "no such agency")
    body = pages.agency_page(svc.model, agency_id, known.get(agency_id), page_number(page),
                             time.time())
    return render(request, svc, who, f"Agency {agency_id}", body)


@router.get("/reports/{report_id}")
async def report(request: Request, report_id: str, svc: Svc, who: Who) -> Response:
    found = svc.model.reports.get(report_id)
    if found is None:
        body = (f"<h1>Report {pages.h(report_id)}</h1><p class='muted'>not in the read model "
                "(yet): this page shows it as soon as an event of it is read</p>")
    else:
        body = pages.report_page(svc.model, found, time.time())
    return render(request, svc, who, f"Report {report_id}", body)


@router.get("/triage")
async def triage(request: Request, svc: Svc, who: Who, page: int = 1) -> Response:
    body = pages.triage_page(svc.model, page_number(page), time.time())
    return render(request, svc, who, "Triage", body)


@router.get("/search")
async def search(request: Request, svc: Svc, who: Who, q: str = "", esp: str = "",
                 page: int = 1) -> Response:
    q, esp = q.strip()[:200], esp.strip()[:200]
    if q and q in svc.model.reports and request.headers.get("X-Console-Fragment") != "1":
        return RedirectResponse(f"/reports/{quote(q, safe='')}", 303)
    body = pages.search_page(svc.model, q, esp, page_number(page), time.time())
    return render(request, svc, who, "Search", body)


@router.get("/live/version")
async def version(svc: Svc, who: Who) -> Response:
    return JSONResponse({"version": svc.model.version, "caught_up": svc.model.caught_up},
                        headers=HEADERS)


@router.get("/login")
async def login_form(svc: Svc, next: str = "/") -> Response:
    return HTMLResponse(pages.layout("Sign in", pages.login(next_url=_local(next)),
                                     svc.model.version), headers=HEADERS)


@router.post("/login")
async def login(request: Request, svc: Svc) -> Response:
    form = await request.form()
    analyst_id, password = str(form.get("analyst_id", "")), str(form.get("password", ""))
    next_url = _local(str(form.get("next", "/")))
    if _foreign(request):  # another site's page posting the form: no session comes of it
        return HTMLResponse(pages.layout("Sign in", pages.login(
            "sign in from the console's own page", next_url), 0), status_code=403,
            headers=HEADERS)
    address = request.client.host if request.client else "unknown"
    try:
        ok = bool(analyst_id) and await svc.directory.verify(analyst_id, password, address)
        role = await svc.directory.role(analyst_id) if ok else ""
        cookie = await svc.sessions.open(analyst_id, role, time.time()) if ok else ""
    except LoginRefused as exc:
        return HTMLResponse(pages.layout("Sign in", pages.login(exc.reason, next_url), 0),
                            status_code=exc.status, headers={**HEADERS,
                                                      "Retry-After": str(exc.retry_after_s)})
    except UNAVAILABLE:  # the staff directory (Redis) away: try again, never "wrong password"
        return HTMLResponse(pages.layout("Sign in", pages.login(
            "sign-in is unavailable for a moment: try again", next_url), 0), status_code=503,
            headers={**HEADERS, "Retry-After": "2"})
    if not ok:
        return HTMLResponse(pages.layout("Sign in", pages.login(
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



def _agencies(svc: Console) -> dict[str, Any]:
    svc.registry.get("")  # re-read when the routing file changed
    return svc.registry.agencies


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

    return api
