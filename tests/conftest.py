"""Shared fixtures: the real face data in ../shared/data (skip when absent, fail under ARGUSNET_REQUIRE_DATA=1),
one engine per session, and a runner for the real `argusnet` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def require_data(*parts: str) -> Path:
    """The path under ../shared/data, or skip (fail when ARGUSNET_REQUIRE_DATA=1) when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        message = f"test data not found: {path}"
        if os.environ.get("ARGUSNET_REQUIRE_DATA") == "1":
            pytest.fail(message + " (ARGUSNET_REQUIRE_DATA=1)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def config():
    from argusnet.config import load_config

    return load_config(environ={})


@pytest.fixture(scope="session")
def engine(config):
    from gpu_worker.engine import Engine

    return Engine(config)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    """Run the real `argusnet` CLI in a subprocess (python -m argusnet) and capture its output. On a timeout the
    command and every process it started (`argusnet up`'s children: one process group) are killed."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
    full_env.update(env or {})
    with subprocess.Popen([sys.executable, "-m", "argusnet", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return Result(proc.returncode, out, err)


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A redis-server of the test session (stopped at its end); its URL is also in the environment
    (``tests.redis_server.URL_ENV``) so that processes a test spawns reach it. Tests share it under distinct
    key prefixes."""
    from redis_server import URL_ENV, start_redis

    try:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    previous = os.environ.get(URL_ENV)
    os.environ[URL_ENV] = server.url
    yield server.url
    server.stop()
    if previous is None:
        os.environ.pop(URL_ENV, None)
    else:
        os.environ[URL_ENV] = previous
