"""The Redis connection of one store, the translation of Redis errors into `StoreError`, and the short write lock
of a gallery.

Every Redis call of the backend runs inside ``RedisErrors.guard(what)`` (or a method decorated with
``redis_op``): a dead server, a timeout or a refused command leaves as `StoreError` naming the store and the
operation, never as a bare redis-py traceback. The client never retries on its own: a dead server fails an
operation after ``socket_timeout_s``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, ParamSpec, Protocol, TypeVar

import redis
from redis import exceptions as redis_exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.errors import ConfigError, StoreError, StoreUnavailableError
from store.config import RedisStoreConfig

log = logging.getLogger(__name__)

LOCK_TTL_MS = 10_000  # a process that dies holding a gallery's lock blocks the others at most this long
LOCK_WAIT_S = 15.0  # how long a writer waits for the lock before it gives up with StoreError
LOCK_POLL_S = 0.005

# Delete the lock only when it still holds this process's token (it may have expired and been taken by another).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def read_password(cfg: RedisStoreConfig) -> str | None:
    if cfg.password_file is None:
        return None
    try:
        lines = cfg.password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"store.password_file: cannot read {cfg.password_file}: {exc}") from exc
    if not lines or not lines[0].strip():
        raise ConfigError(f"store.password_file: {cfg.password_file} is empty")
    return lines[0].strip()


def connect(cfg: RedisStoreConfig) -> redis.Redis:
    """A client for the configured server (binary replies; no retries, so failures surface after the timeout)."""
    return redis.Redis.from_url(cfg.url, password=read_password(cfg), socket_timeout=cfg.socket_timeout_s,
                                socket_connect_timeout=cfg.socket_timeout_s, retry=Retry(NoBackoff(), 0),
                                decode_responses=False, client_name="argusnet")


class HasWhere(Protocol):
    where: str


P = ParamSpec("P")
R = TypeVar("R")


UNAVAILABLE_HINT = "is the Redis server running and reachable from this host?"


def store_error(where: str, what: str, exc: redis.RedisError) -> StoreError:
    """A refused or lost connection and a timeout (the server is down, unreachable, or still loading its data) are
    `StoreUnavailableError`; any other Redis failure is `StoreError`. Both name the store and the operation."""
    kind = type(exc).__name__
    refused = isinstance(exc, (redis.AuthenticationError, redis_exceptions.AuthorizationError))  # reached: said no
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and not refused:
        return StoreUnavailableError(f"redis store {where}: {what} failed ({kind}: {exc}); {UNAVAILABLE_HINT}")
    return StoreError(f"redis store {where}: {what} failed ({kind}: {exc})")


def redis_op(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a method of an object with a ``where`` attribute: Redis errors leave it as StoreError."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except redis.RedisError as exc:
                owner: HasWhere = args[0]  # type: ignore[assignment]
                raise store_error(owner.where, what, exc) from exc

        return inner

    return wrap


@contextlib.contextmanager
def guard(where: str, what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise store_error(where, what, exc) from exc


@dataclass(frozen=True)
class LockHeld:
    token: bytes
    acquired_at: float


class WriteLock:
    """A short lock on one key shared by every process (SET NX PX with a random token; released by a
    compare-and-delete script), plus a thread lock for this process. Re-entrant within one thread. Used inside
    ``redis_op`` methods: a Redis error while taking or releasing it leaves as that operation's StoreError."""

    def __init__(self, client: redis.Redis, key: str, where: str) -> None:
        self._r = client
        self._key = key
        self.where = where
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._release = client.register_script(RELEASE_SCRIPT)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            held = self._acquire()
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._release_after_error(held)
                raise
            self._depth = 0
            self._release_now(held)

    def _acquire(self) -> LockHeld:
        token = secrets.token_hex(16).encode()
        deadline = time.monotonic() + LOCK_WAIT_S
        while not self._r.set(self._key, token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise StoreError(f"redis store {self.where}: the lock {self._key} has been held by another "
                                 f"process for more than {LOCK_WAIT_S:.0f} s")
            time.sleep(LOCK_POLL_S)
        return LockHeld(token, time.monotonic())

    def _release_now(self, held: LockHeld) -> None:
        released = self._release(keys=[self._key], args=[held.token])
        if not released:
            log.warning("redis store %s: the lock %s expired after %.1f s, before this process released it; "
                        "another writer may have run at the same time", self.where, self._key,
                        time.monotonic() - held.acquired_at)

    def _release_after_error(self, held: LockHeld) -> None:
        """Release while another error is leaving: a failure here is logged (the lock expires after LOCK_TTL_MS)
        so that the original error is the one raised."""
        try:
            self._release(keys=[self._key], args=[held.token])
        except redis.RedisError as exc:
            log.warning("redis store %s: could not release the lock %s (%s); it expires in %d ms", self.where,
                        self._key, exc, LOCK_TTL_MS)
