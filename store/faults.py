"""Which store failures pass: the disk or the database of a store failing for a while (full, read-only, an I/O
error, locked), told apart from a store that refuses an operation for good. ``as_fault`` maps an exception (or the
exception it was raised from: backends wrap OSError and sqlite3 errors in `StoreError`) to `StoreFaultError`,
which the worker's store (`store.buffered`) handles as it handles an unavailable server: writes wait and are
retried, nothing is given up while the buffer has room."""

from __future__ import annotations

import errno
import sqlite3

from shared.errors import StoreFaultError

FAULT_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EROFS: "the file system is read-only", errno.EIO: "an I/O error",
                errno.EFBIG: "a file is too large"}
SQLITE_FAULTS = {sqlite3.SQLITE_FULL: "the disk is full", sqlite3.SQLITE_IOERR: "an I/O error",
                 sqlite3.SQLITE_READONLY: "the database is read-only", sqlite3.SQLITE_BUSY: "the database is locked",
                 sqlite3.SQLITE_LOCKED: "the database is locked", sqlite3.SQLITE_CANTOPEN: "a file cannot be opened"}
MAX_CHAIN = 8  # causes followed


def fault_reason(exc: BaseException) -> str | None:
    """Why ``exc`` (or what it was raised from) is a passing fault of the store's disk or database, in words; None
    when it is not one."""
    seen: BaseException | None = exc
    for _ in range(MAX_CHAIN):
        if seen is None:
            return None
        if isinstance(seen, StoreFaultError):
            return str(seen)
        if isinstance(seen, OSError) and seen.errno in FAULT_ERRNOS:
            return FAULT_ERRNOS[seen.errno]
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in SQLITE_FAULTS:
                return SQLITE_FAULTS[code & 0xFF]
        seen = seen.__cause__ or seen.__context__
    return None


def as_fault(where: str, operation: str, exc: BaseException) -> StoreFaultError | None:
    """``exc`` as a StoreFaultError naming the store and the operation, or None when it is no passing fault."""
    if isinstance(exc, StoreFaultError):
        return exc
    reason = fault_reason(exc)
    if reason is None:
        return None
    return StoreFaultError(f"store {where}: {operation} failed, {reason} ({type(exc).__name__}: {exc})")
