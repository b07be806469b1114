"""The HTML pages (Jinja2, autoescaped: every name is user input) and the login form. Pages without a session
redirect to /login; their data comes from the JSON API, drawn by static/app.js with textContent only."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import quote, urlparse

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from dashboard.auth import COOKIE, FAIL_DELAY_S, LoginKeys, Reservation
from dashboard.guard import dashboard_of, require_change, viewer_of

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()
PAGES = {"live": "Live", "recognitions": "Recognitions", "people": "People"}


def _safe_next(target: str | None) -> str:
    """Only a local path: never an open redirect to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
        return "/live"
    return target


def _page(request: Request, template: str, **context) -> Response:
    viewer = viewer_of(request)
    if viewer is None:
        dashboard_of(request).metrics.refused.labels(reason="no_session").inc()
        return RedirectResponse(f"/login?next={quote(str(request.url.path))}", status_code=303)
    return TEMPLATES.TemplateResponse(request, template, {"viewer": viewer, "pages": PAGES, **context})


@router.get("/", include_in_schema=False)
def root() -> Response:
    return RedirectResponse("/live", status_code=303)


@router.get("/live", response_class=HTMLResponse)
def live(request: Request) -> Response:
    return _page(request, "live.html", page="live")


@router.get("/recognitions", response_class=HTMLResponse)
def recognitions(request: Request) -> Response:
    return _page(request, "recognitions.html", page="recognitions")


@router.get("/people", response_class=HTMLResponse)
def people(request: Request) -> Response:
    return _page(request, "people.html", page="people")


@router.get("/identity/{name}", response_class=HTMLResponse)
def identity(request: Request, name: str) -> Response:
    return _page(request, "identity.html", page="", name=name)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return TEMPLATES.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": None})


def _login_page(request: Request, next: str | None, error: str, status: int, retry_s: float | None = None) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_s)))} if retry_s is not None else None
    return TEMPLATES.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": error},
                                      status_code=status, headers=headers)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, username: str = Form(..., max_length=64), password: str = Form(..., max_length=1024),
                next: str | None = Form(None)) -> Response:
    """The attempt is counted before its password is checked (`LoginThrottle.reserve`), and at most
    ``dashboard.max_login_checks`` checks run at once (a full queue answers 503)."""
    dash = dashboard_of(request)
    client = request.client.host if request.client else "unknown"
    reserved = dash.throttle.reserve(LoginKeys(client, username))
    if not isinstance(reserved, Reservation):
        dash.metrics.logins.labels(outcome="throttled").inc()
        return _login_page(request, next, f"Too many failed logins: try again in {reserved:.0f} s.", 429, reserved)
    if not await dash.login_checks.acquire():
        dash.throttle.give_back(reserved)
        dash.metrics.logins.labels(outcome="busy").inc()
        dash.warn("login_busy", "more logins at once than dashboard.max_login_checks (%d) and its queue: refused "
                  "with 503 (a password-guessing storm?)", dash.cfg.max_login_checks)
        return _login_page(request, next, "The server is busy checking other logins: try again shortly.", 503, 2.0)
    try:
        user = await asyncio.to_thread(dash.users.verify, username, password)
    finally:
        dash.login_checks.release()
    if user is None:
        dash.metrics.logins.labels(outcome="wrong").inc()
        dash.record(f"dashboard:{client}", "login_failed", None, user_given=len(username) > 0)
        await asyncio.sleep(FAIL_DELAY_S)
        return _login_page(request, next, "Wrong user name or password.", 401)
    dash.throttle.succeeded(reserved)
    dash.metrics.logins.labels(outcome="ok").inc()
    dash.record(f"dashboard:{user.name}", "login", None, role=user.role, address=client)
    cookie, session = dash.signer.issue(user.name, user.role, user.hash)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=int(session.expires - time.time()), httponly=True,
                        samesite="strict", secure=dash.cfg.secure_cookies, path="/")
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str | None = Form(None)) -> Response:
    """Ends every session the user holds (`Revocations`): a copied cookie, and the live stream, stop too."""
    viewer = viewer_of(request)
    if viewer is None:
        raise HTTPException(401, "not logged in")
    require_change(request, csrf_token, admin=False)
    dash = dashboard_of(request)
    dash.revocations.revoke(viewer.name)
    dash.record(viewer.actor, "logout", None)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=dash.cfg.secure_cookies)
    return response
