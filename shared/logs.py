"""Logging set-up shared by every process, and a logger that reports a recurring problem once per interval."""

from __future__ import annotations

import logging
import sys
import threading
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr in one format; quiet third-party noise."""
    logging.basicConfig(level=level.upper(), format=FORMAT, stream=sys.stderr, force=True)


class RateLimitedLog:
    """Log a message at most once per ``interval_s`` for each key (e.g. a protocol error reason), counting
    how many were suppressed in between so the next line can say so."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log unless ``key`` was logged less than ``interval_s`` ago; return whether it was logged."""
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            skipped = self._suppressed.pop(key, 0)
        suffix = f" ({skipped} more since last report)" if skipped else ""
        self.logger.log(level, msg + suffix, *args, exc_info=exc_info)
        return True
