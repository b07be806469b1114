"""Sessions, CSRF tokens, revocation and login throttling.

A session is a cookie ``argusnet_session`` = ``base64(json{user, role, exp, sid, issued, stamp}) . HMAC-SHA256``
signed with the dashboard's secret key (HttpOnly, SameSite=Strict; Secure with ``dashboard.secure_cookies``). It
names the user, whose role is read again from the users file on every request (a removed user is logged out at
once). ``stamp`` is a MAC of the user's password hash: a password change (`argusnet dashboard user add --replace`,
a new salted hash) voids every session of that user, and so does removing the user. A logout voids every session
the user was issued before it (`Revocations`, kept in ``dashboard.revoked_file``). The CSRF token of a session is
HMAC(key, "csrf:" + sid): pages carry it in a ``<meta>`` tag and every state-changing request must send it back in
the ``X-CSRF-Token`` header (or a ``csrf_token`` form field); SameSite=Strict already keeps other sites' requests
from carrying the cookie, the token covers older browsers and same-site attackers.

Failed logins are slowed per client address and per user name: after ``FREE_FAILURES`` failures within
``WINDOW_S`` each further attempt must wait 2, 4, 8 ... up to ``MAX_DELAY_S`` seconds (429 with Retry-After before
that), and every failure answers only after ``FAIL_DELAY_S``. An attempt is counted as a failure when it is let
through, before its password is checked (a success takes it back), so a burst of concurrent guesses gets no more
checks than the allowance. The per-user delay applies only to an address that has failed itself within the window:
a storm of guesses against a user from other addresses never refuses that user's right password from an address
that has not been failing (a guesser spread over many addresses gets one guess per fresh address per window).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import InputError
from shared.files import atomic_write

log = logging.getLogger(__name__)

COOKIE = "argusnet_session"
KEY_BYTES = 32
FREE_FAILURES = 3
WINDOW_S = 15 * 60.0
MAX_DELAY_S = 60.0
FAIL_DELAY_S = 0.5
MAX_THROTTLE_KEYS = 10000
STAMP_CHARS = 22
QUEUE_PER_SLOT = 8
QUEUE_WAIT_S = 10.0


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
    issued: float
    stamp: str  # a MAC of the user's password hash when the session was issued


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

    def stamp(self, password_hash: str) -> str:
        """What a session keeps of its user's password hash: a new hash (a password change) voids it."""
        return self._mac(f"cred:{password_hash}".encode())[:STAMP_CHARS]

    def issue(self, user: str, role: str, password_hash: str, now: float | None = None) -> tuple[str, Session]:
        now = time.time() if now is None else now
        session = Session(user, role, now + self.lifetime_s, secrets.token_urlsafe(16), now,
                          self.stamp(password_hash))
        body = json.dumps({"u": user, "r": role, "e": session.expires, "s": session.sid, "i": now,
                           "g": session.stamp}, separators=(",", ":"))
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
            session = Session(str(data["u"]), str(data["r"]), float(data["e"]), str(data["s"]), float(data["i"]),
                              str(data["g"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (time.time() if now is None else now) else None

    def csrf(self, session: Session) -> str:
        return self._mac(f"csrf:{session.sid}".encode())

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf(session))

    def current(self, session: Session, password_hash: str) -> bool:
        """Whether the session was issued for the user's present password."""
        return hmac.compare_digest(session.stamp, self.stamp(password_hash))


class Revocations:
    """Per user, the time of their last logout: sessions issued before it are void. Kept in a JSON file (mode 0600,
    replaced atomically) so a restart does not revive a logged-out cookie; entries older than a session's lifetime
    are dropped. A file that cannot be written is warned about and the logouts are kept in memory (they hold until
    the dashboard restarts)."""

    def __init__(self, path: Path | None, lifetime_s: float) -> None:
        self.path = None if path is None else Path(path)
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._logouts: dict[str, float] = self._load()

    def _load(self) -> dict[str, float]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(user): float(ts) for user, ts in data["logouts"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"dashboard.revoked_file {self.path} is not readable ({exc}); fix or remove it") from exc

    def revoke(self, user: str, now: float | None = None) -> None:
        """Void every session ``user`` holds now."""
        now = time.time() if now is None else now
        with self._lock:
            self._logouts = {u: t for u, t in self._logouts.items() if now - t < self.lifetime_s}
            self._logouts[user] = now
            body = json.dumps({"logouts": self._logouts}, indent=1).encode()
        if self.path is None:
            return
        old = os.umask(0o077)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, body, durable=True)
        except OSError as exc:
            log.warning("dashboard.revoked_file %s: cannot write it (%s); logouts hold only until the dashboard "
                        "restarts", self.path, exc)
        finally:
            os.umask(old)

    def revoked(self, session: Session) -> bool:
        logout = self._logouts.get(session.user)
        return logout is not None and session.issued <= logout


@dataclass(frozen=True)
class LoginKeys:
    """What one login attempt is throttled by: the client's address and the user name it gives."""

    address: str
    user: str

    @property
    def address_key(self) -> str:
        return f"addr:{self.address}"

    @property
    def user_key(self) -> str:
        return f"user:{self.user}"


@dataclass(frozen=True)
class Reservation:
    """An attempt let through and counted as a failure until it succeeds or is given back."""

    keys: LoginKeys
    at: float


class LoginThrottle:
    """Failed logins per key (client address, user name) within WINDOW_S (see the module docstring). Thread-safe:
    an attempt is checked and counted under one lock."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, ()) if now - t < WINDOW_S]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def _wait(self, key: str, now: float) -> float:
        recent = self._recent(key, now)
        if len(recent) < FREE_FAILURES:
            return 0.0
        delay = min(MAX_DELAY_S, 2.0 ** (len(recent) - FREE_FAILURES + 1))
        return max(0.0, recent[-1] + delay - now)

    def reserve(self, keys: LoginKeys, now: float | None = None) -> Reservation | float:
        """A `Reservation` (the attempt counted as a failure already) when it may be checked now; else how many
        seconds it must wait (nothing counted). The user's delay binds only an address that failed itself."""
        now = time.time() if now is None else now
        with self._lock:
            wait = self._wait(keys.address_key, now)
            if self._recent(keys.address_key, now):
                wait = max(wait, self._wait(keys.user_key, now))
            if wait > 0:
                return wait
            self._bound()
            for key in (keys.address_key, keys.user_key):
                self._failures.setdefault(key, []).append(now)
            return Reservation(keys, now)

    def _bound(self) -> None:
        if len(self._failures) > MAX_THROTTLE_KEYS:  # a flood of names: keep memory bounded, forget the oldest
            for key in sorted(self._failures, key=lambda k: self._failures[k][-1])[:MAX_THROTTLE_KEYS // 2]:
                del self._failures[key]

    def give_back(self, reservation: Reservation) -> None:
        """The attempt was not checked after all (the server was busy): it does not count."""
        with self._lock:
            for key in (reservation.keys.address_key, reservation.keys.user_key):
                times = self._failures.get(key, [])
                if reservation.at in times:
                    times.remove(reservation.at)

    def succeeded(self, reservation: Reservation) -> None:
        with self._lock:
            for key in (reservation.keys.address_key, reservation.keys.user_key):
                self._failures.pop(key, None)


class LoginChecks:
    """At most ``slots`` password checks at once (each an argon2 hash of 64 MiB); up to ``QUEUE_PER_SLOT`` times
    as many logins wait for one (at most ``QUEUE_WAIT_S``), the rest are refused at once."""

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)
        self.queue = slots * QUEUE_PER_SLOT
        self.waiting = 0

    async def acquire(self) -> bool:
        """Whether a check may run now (then `release` it); False when the queue is full or the wait too long."""
        if self.waiting >= self.queue:
            return False
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), QUEUE_WAIT_S)
        except asyncio.TimeoutError:
            return False
        finally:
            self.waiting -= 1
        return True

    def release(self) -> None:
        self._slots.release()
