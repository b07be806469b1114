"""After an erasure, the Redis server's own files: an append-only file (AOF) keeps every command ever run, so the
erased name, faces and crops stay in it until it is rewritten from what the server holds now. ``rewrite_files``
asks for that rewrite (BGREWRITEAOF) and waits for it to finish, and does the same for RDB snapshots (BGSAVE) when
the server is configured to make them; what it could not do comes back in words, for the forget's report (which
then exits 1): a managed Redis that refuses the commands, a rewrite that failed or did not finish in time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import redis

REWRITE_WAIT_S = 120.0  # an AOF rewrite or snapshot of a large server may take this long
POLL_S = 0.05


@dataclass(frozen=True)
class Job:
    """One background job of the server: the command that starts it, and the INFO fields that tell it runs, how
    many finished (or when the last one did) and how the last one went."""

    command: str
    running: tuple[str, ...]
    finished: str
    status: str
    file: str


AOF = Job("BGREWRITEAOF", ("aof_rewrite_in_progress", "aof_rewrite_scheduled"), "aof_rewrites",
          "aof_last_bgrewrite_status", "append-only file (AOF)")
RDB = Job("BGSAVE", ("rdb_bgsave_in_progress",), "rdb_last_save_time", "rdb_last_bgsave_status", "RDB snapshot")


def _info(client: redis.Redis) -> dict:
    info = dict(client.info("persistence"))
    info.update(client.info("stats"))
    return info


def _wait(client: redis.Redis, until: Callable[[dict], bool], deadline: float) -> dict | None:
    while True:
        info = _info(client)
        if until(info):
            return info
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)


def _idle(job: Job) -> Callable[[dict], bool]:
    return lambda info: not any(int(info.get(field, 0)) for field in job.running)


def _run(client: redis.Redis, job: Job, where: str) -> str | None:
    """Start ``job`` after any one already running (it may have begun before the erasure) and wait for it to end;
    None when it went well, else what is left, in words."""
    deadline = time.monotonic() + REWRITE_WAIT_S
    if _wait(client, _idle(job), deadline) is None:
        return f"redis store {where}: the {job.file} still holds the erased data: a {job.command} already " \
               f"running did not finish within {REWRITE_WAIT_S:.0f} s; run `{job.command}` on the server once it has"
    before = _info(client).get(job.finished, 0)
    if job is RDB:
        time.sleep(max(0.0, float(before) + 1.0 - time.time()))  # LASTSAVE has 1 s resolution
    client.execute_command(job.command)
    done = _wait(client, lambda info: _idle(job)(info) and info.get(job.finished, 0) != before, deadline)
    if done is None:
        return f"redis store {where}: the {job.file} still holds the erased data: {job.command} did not finish " \
               f"within {REWRITE_WAIT_S:.0f} s; check that it completes (INFO persistence)"
    if str(done.get(job.status, "ok")) != "ok":
        return f"redis store {where}: the {job.file} still holds the erased data: {job.command} failed " \
               f"({job.status}: {done.get(job.status)}); run it again on the server"
    return None


def _snapshots_on(client: redis.Redis) -> bool:
    return bool(client.config_get("save").get("save", ""))


def rewrite_files(client: redis.Redis, where: str) -> tuple[str, ...]:
    """Rewrite the server's AOF (when it keeps one) and RDB snapshot (when it makes them) so that no erased byte
    stays in its files; what could not be done, in words (empty when all went)."""
    left: list[str] = []
    try:
        aof_on = bool(int(_info(client).get("aof_enabled", 0)))
    except redis.RedisError as exc:
        return (f"redis store {where}: cannot tell whether the server keeps an append-only file ({exc}): if it does, "
                "run BGREWRITEAOF on it, and BGSAVE if it makes RDB snapshots",)
    try:
        problem = _run(client, AOF, where) if aof_on else None
    except redis.RedisError as exc:
        problem = f"redis store {where}: the append-only file (AOF) still holds the erased data: BGREWRITEAOF was " \
                  f"refused ({exc}); run it on the server"
    if problem:
        left.append(problem)
    try:
        problem = _run(client, RDB, where) if _snapshots_on(client) else None
    except redis.RedisError as exc:
        problem = f"redis store {where}: an RDB snapshot, if the server makes them, may still hold the erased data " \
                  f"(CONFIG GET save or BGSAVE refused: {exc}); run BGSAVE on the server"
    if problem:
        left.append(problem)
    return tuple(left)
