"""A throwaway redis-server for the tests: on a free loopback port (or a given one: a restart), in a temporary
directory, no persistence unless the options ask for it (``--appendonly yes``: later options win)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from argusnet.launcher import free_port

URL_ENV = "ARGUSNET_TEST_REDIS_URL"  # set by the session fixture; spawned test processes inherit it
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RedisServer:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no AOF rewrite; what survives is what was on disk."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _ready(port: int, process: subprocess.Popen, password: str | None) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    client = redis.Redis(port=port, password=password, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


def start_redis(directory: Path, *extra: str, attempts: int = 3, port: int | None = None) -> RedisServer:
    """Start redis-server (``extra``: more options, e.g. ``--requirepass PW``) on a free port, or on ``port`` (one
    attempt); RuntimeError when it is not installed or does not come up."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    for _ in range(1 if port is not None else attempts):  # another process may take a free port before it binds
        chosen = free_port() if port is None else port
        process = subprocess.Popen([binary, "--port", str(chosen), "--bind", "127.0.0.1", "--dir", str(directory),
                                    "--save", "", "--appendonly", "no", *extra], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        if _ready(chosen, process, password):
            return RedisServer(process, chosen)
        RedisServer(process, chosen).stop()
    where = f"on port {port}" if port is not None else f"on a free port after {attempts} attempts"
    raise RuntimeError(f"redis-server did not start {where}")
