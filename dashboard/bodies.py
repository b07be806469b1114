"""Request bodies are judged before anything reads them (an ASGI middleware in front of FastAPI's form parsing):

- a request without a valid session may send no body at all (401, the body never read), except the login form;
- the login form may be ``LOGIN_BODY_BYTES`` at most, a logged-in user's body ``dashboard.max_upload_bytes`` +
  ``FORM_BYTES`` (413);
- the size is judged from ``Content-Length`` before the app runs, and the bytes of a body that streams without one
  (chunked) are counted as they arrive: the request is refused (413) as soon as they pass the limit.

Each refusal is counted (``argusnet_dashboard_refused_total``, reasons ``body_without_session`` and
``body_too_large``), logged at most once a minute, and answered with ``Connection: close`` (the rest of the body is
never read)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.auth import COOKIE
from dashboard.context import Dashboard
from dashboard.guard import viewer_from_cookie

LOGIN_PATH = "/login"
LOGIN_BODY_BYTES = 4096
FORM_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit (FastAPI passes HTTPExceptions through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit


def declared_length(headers: Headers) -> int | None:
    """The body's ``Content-Length`` (None when absent or not a number: the bytes are counted instead)."""
    value = headers.get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def has_body(headers: Headers) -> bool:
    length = declared_length(headers)
    return (length is not None and length > 0) or "transfer-encoding" in headers


class BodyGuard:
    def __init__(self, app: ASGIApp, dash: Dashboard) -> None:
        self.app = app
        self.dash = dash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"] == LOGIN_PATH:
            limit = LOGIN_BODY_BYTES
        elif viewer_from_cookie(self.dash, HTTPConnection(scope).cookies.get(COOKIE)) is None:
            await self._refuse(scope, send, "body_without_session", 401,
                               "log in first (POST /login): a request without a session may not send a body")
            return
        else:
            limit = self.dash.cfg.max_upload_bytes + FORM_BYTES
        length = declared_length(headers)
        if length is not None and length > limit:
            await self._refuse(scope, send, "body_too_large", 413, f"request body larger than {limit} bytes")
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """The app with a ``receive`` that counts the body's bytes and stops it past ``limit``."""
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._refuse(scope, send, "body_too_large", 413, exc.detail)
            return
        if seen > limit:  # the app turned BodyTooLarge into its 413 itself: count and log it here
            self._count("body_too_large", scope, f"request body larger than {limit} bytes")

    async def _refuse(self, scope: Scope, send: Send, reason: str, status: int, detail: str) -> None:
        self._count(reason, scope, detail)
        response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
        await response(scope, self._no_body, send)

    def _count(self, reason: str, scope: Scope, detail: str) -> None:
        self.dash.metrics.refused.labels(reason=reason).inc()
        client = scope.get("client") or ("unknown", 0)
        self.dash.warn(f"body:{reason}", "refused a request body from %s to %s %s: %s", client[0], scope["method"],
                       scope["path"], detail)

    @staticmethod
    async def _no_body() -> Message:
        return {"type": "http.disconnect"}
