"""Who is asking: the session of a request, checked against the users file on every request, and the checks a
route needs (a user for pages and reads; an admin with the session's CSRF token for changes)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from dashboard.auth import COOKIE, Session
from dashboard.context import Dashboard

CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Viewer:
    name: str
    role: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"dashboard:{self.name}"


def dashboard_of(request: Request) -> Dashboard:
    return request.app.state.dashboard


def viewer_of(request: Request) -> Viewer | None:
    """The logged-in user, or None (no cookie, a forged, expired or revoked one, or a user removed since)."""
    return viewer_from_cookie(dashboard_of(request), request.cookies.get(COOKIE))


def viewer_from_cookie(dash: Dashboard, cookie: str | None) -> Viewer | None:
    """The user a session cookie logs in, or None: no cookie, a forged or expired one, a user removed or whose
    password changed since it was issued, or one logged out since (the last three counted as ``revoked``)."""
    session: Session | None = dash.signer.read(cookie)
    if session is None:
        return None
    user = dash.users.users().get(session.user)
    if user is None or not dash.signer.current(session, user.hash) or dash.revocations.revoked(session):
        dash.metrics.refused.labels(reason="revoked").inc()
        return None
    return Viewer(user.name, user.role, dash.signer.csrf(session))


def require_viewer(request: Request) -> Viewer:
    """For /api/* reads: 401 without a session."""
    viewer = viewer_of(request)
    if viewer is None:
        dashboard_of(request).metrics.refused.labels(reason="no_session").inc()
        raise HTTPException(401, "log in first (POST /login)")
    return viewer


def require_change(request: Request, token: str | None = None, admin: bool = True) -> Viewer:
    """For state changes: a session (401), the admin role when ``admin`` (403), and the session's CSRF token in
    the X-CSRF-Token header or ``token`` (a form field) (403)."""
    viewer = require_viewer(request)
    dash = dashboard_of(request)
    if admin and not viewer.admin:
        dash.metrics.refused.labels(reason="not_admin").inc()
        raise HTTPException(403, f"user {viewer.name!r} has the role {viewer.role!r}: this needs admin")
    sent = request.headers.get(CSRF_HEADER) or token
    if not sent or not hmac.compare_digest(sent, viewer.csrf):
        dash.metrics.refused.labels(reason="csrf").inc()
        raise HTTPException(403, f"missing or wrong CSRF token (send the {CSRF_HEADER} header from /api/session)")
    return viewer
