"""`argusnet up`'s lock on its site: its store and the TCP ports its children will listen on, taken before it
enrols or starts anything, so that a second `up` on the same site (started a moment later, when the ports are
still free) refuses at once instead of enrolling the demo face twice and running duplicate workers and cameras.

Each part of the site is one lock file held with ``flock(LOCK_EX | LOCK_NB)`` for the life of the process (the
kernel releases it when the process ends, however it ends); the holder writes its pid in it so that the refusal can
name the other `up`. A local store's lock file is in the store directory (``store.local.gallery.UP_LOCK_FILE``,
so another user or a checkout elsewhere is refused too); a Redis store's and the ports' are in a folder of this
user under the temporary directory."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from shared.errors import InputError
from store.config import LocalStoreConfig, StoreConfig
from store.local.gallery import UP_LOCK_FILE

PID_WAIT_S = 1.0  # the holder writes its pid just after taking the lock: how long to wait to read it


@dataclass(frozen=True)
class LockTarget:
    """One part of a site: what it is (for the message) and its lock file."""

    what: str
    path: Path


def lock_folder() -> Path:
    """This user's folder for the locks that have no store directory to live in."""
    return Path(tempfile.gettempdir()) / f"argusnet-{os.getuid()}"


def site_targets(store: StoreConfig, ports: Iterable[int]) -> list[LockTarget]:
    """The store first (the site's identity), then each TCP port (any host: two sites on one port of one machine
    are refused even on different addresses)."""
    if isinstance(store, LocalStoreConfig):
        first = LockTarget(f"store {store.describe()}", store.directory() / UP_LOCK_FILE)
    else:
        digest = hashlib.sha256(f"{store.url}|{store.prefix}".encode()).hexdigest()[:24]
        first = LockTarget(f"store {store.describe()} (prefix {store.prefix})",
                           lock_folder() / f"store-{digest}.lock")
    return [first, *(LockTarget(f"port {port}", lock_folder() / f"port-{port}.lock") for port in sorted(set(ports)))]


class SiteLock:
    """The held lock files; ``release()`` (or the end of the process) frees them."""

    def __init__(self, site: str, targets: list[LockTarget]) -> None:
        self.site = site
        self.targets = targets
        self._fds: list[int] = []

    def acquire(self) -> "SiteLock":
        """Every part, or InputError naming the site, the part held and the other `up`'s pid (nothing held)."""
        try:
            for target in self.targets:
                self._fds.append(self._take(target))
        except BaseException:
            self.release()
            raise
        return self

    def _take(self, target: LockTarget) -> int:
        try:
            target.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InputError(f"cannot lock the {target.what} of site {self.site} ({target.path}: "
                             f"{exc.strerror})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise InputError(f"cannot lock {target.path} for site {self.site}: {exc.strerror}") from exc
            raise InputError(f"site {self.site} is already run by another `argusnet up` (pid {_holder(target.path)}, "
                             f"holding its {target.what}): stop that one first, or give this one another store "
                             "and other ports") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the last descriptor of the file releases its flock

    def __enter__(self) -> "SiteLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(path: Path) -> str:
    """The pid written in a held lock file ("unknown" when the holder has not written it within PID_WAIT_S)."""
    deadline = time.monotonic() + PID_WAIT_S
    while True:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text.isdigit() or time.monotonic() >= deadline:
            return text if text.isdigit() else "unknown"
        time.sleep(0.05)
