"""Sessions, CSRF tokens and login throttling.

A session is a cookie ``argusnet_session`` = ``base64(json{user, role, exp, sid}) . HMAC-SHA256`` signed with the
dashboard's secret key (HttpOnly, SameSite=Strict; Secure with ``dashboard.secure_cookies``). It names the user,
whose role is read again from the users file on every request (a removed user is logged out at once). The CSRF
token of a session is HMAC(key, "csrf:" + sid): pages carry it in a ``<meta>`` tag and every state-changing request
must send it back in the ``X-CSRF-Token`` header (or a ``csrf_token`` form field); SameSite=Strict already keeps
other sites' requests from carrying the cookie, the token covers older browsers and same-site attackers.

Failed logins are slowed per client address and per user name: after ``FREE_FAILURES`` failures within
``WINDOW_S`` each further attempt must wait 2, 4, 8 ... up to ``MAX_DELAY_S`` seconds (429 with Retry-After before
that), and every failure answers only after ``FAIL_DELAY_S``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import InputError

COOKIE = "argusnet_session"
KEY_BYTES = 32
FREE_FAILURES = 3
WINDOW_S = 15 * 60.0
MAX_DELAY_S = 60.0
FAIL_DELAY_S = 0.5


def load_or_make_key(path: Path) -> bytes:
    """The session key in ``path``; made (random, mode 0600) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(KEY_BYTES).encode())
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise InputError(f"dashboard.session_key_file {path}: cannot read it ({exc})") from exc
    if len(key) < KEY_BYTES:
        raise InputError(f"dashboard.session_key_file {path}: expected at least {KEY_BYTES} bytes, got {len(key)}")
    return key


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    expires: float
    sid: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, key: bytes, lifetime_s: float) -> None:
        self._key = key
        self.lifetime_s = lifetime_s

    def _mac(self, data: bytes) -> str:
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    def issue(self, user: str, role: str, now: float | None = None) -> tuple[str, Session]:
        now = time.time() if now is None else now
        session = Session(user, role, now + self.lifetime_s, secrets.token_urlsafe(16))
        body = json.dumps({"u": user, "r": role, "e": session.expires, "s": session.sid}, separators=(",", ":"))
        payload = _b64(body.encode())
        return f"{payload}.{self._mac(payload.encode())}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None when it is absent, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload.encode())):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["u"]), str(data["r"]), float(data["e"]), str(data["s"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (time.time() if now is None else now) else None

    def csrf(self, session: Session) -> str:
        return self._mac(f"csrf:{session.sid}".encode())

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf(session))


class LoginThrottle:
    """Failed logins per key (client address, user name) within WINDOW_S."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, ()) if now - t < WINDOW_S]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def wait_s(self, keys: tuple[str, ...], now: float | None = None) -> float:
        """How long these keys must wait before the next attempt (0 = may try now)."""
        now = time.time() if now is None else now
        wait = 0.0
        for key in keys:
            recent = self._recent(key, now)
            if len(recent) >= FREE_FAILURES:
                delay = min(MAX_DELAY_S, 2.0 ** (len(recent) - FREE_FAILURES + 1))
                wait = max(wait, recent[-1] + delay - now)
        return max(0.0, wait)

    def failed(self, keys: tuple[str, ...], now: float | None = None) -> None:
        now = time.time() if now is None else now
        if len(self._failures) > 10000:  # a flood of names: keep memory bounded, forget the oldest
            for key in sorted(self._failures, key=lambda k: self._failures[k][-1])[:5000]:
                del self._failures[key]
        for key in keys:
            self._failures.setdefault(key, []).append(now)

    def succeeded(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)
