"""`argusnet up`'s process supervisor: start each component as its own `argusnet` process, restart one that
crashes (with back-off), and stop them all in order (cameras, workers, broker, event printer last so it sees the
final events) on Ctrl-C, SIGTERM or after a duration."""

from __future__ import annotations

import collections
import errno
import logging
import os
import random
import re
import signal
import site
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Sequence

from shared.errors import InputError

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0  # a child gets this long to exit after SIGINT before it is killed
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
POLL_S = 0.2
READY_TIMEOUT_S = 120.0  # how long cameras wait for the workers to load their models
TAIL_LINES = 50  # the last lines of each child's stderr kept for the message when it crashes
PUMP_JOIN_S = 2.0  # how long to wait for the rest of a dead child's stderr before saying why it died
# A line that says what went wrong: a log record at ERROR or above, the CLI's own error line, or the last line of a
# Python traceback (``ImportError: ...``)
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|^argusnet: error:|^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")
TRACEBACK_START = "Traceback (most recent call last):"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORT_FLOOR = 10000  # never hand out well-known or commonly configured service ports
_issued: set[int] = set()  # ports this process handed out already: a closed probe socket frees its port at once


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (32768 when the range cannot be read)."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(attempts: int = 200) -> int:
    """A TCP port that is free on 127.0.0.1 right now (for a child's metrics endpoint or a test's sockets).

    Chosen below the kernel's ephemeral range: a port from ``bind(0)`` comes from that range, so between this
    call and the child's own bind an outgoing connection of any process could take it as its local port."""
    low = _ephemeral_low()
    if low - PORT_FLOOR < 1000:
        raise RuntimeError(f"ephemeral port range starts at {low}: too low to pick fixed ports below it")
    for _ in range(attempts):
        port = random.randrange(PORT_FLOOR, low)
        if port in _issued:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue
        _issued.add(port)
        return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 in [{PORT_FLOOR}, {low}) after {attempts} tries")


def reserve_ports(ports: Iterable[int]) -> None:
    """Never hand out these ports (configured ones a child binds later, free right now) from ``free_port``."""
    _issued.update(p for p in ports if p)


@dataclass(frozen=True)
class Listen:
    """A TCP address a child of `argusnet up` will listen on: the configuration field it comes from, the value as
    configured (for messages), and the host and port to check."""

    field: str
    value: str
    host: str
    port: int


WILDCARD_HOSTS = {"*": "0.0.0.0", "": "0.0.0.0"}


def tcp_listen(field_name: str, endpoint: str) -> Listen | None:
    """The address of a ZeroMQ ``tcp://HOST:PORT`` endpoint (``*`` = every interface, ``[::1]`` IPv6); None for
    other transports (ipc://, inproc://) and for ports chosen at bind time (``*``, ``!``)."""
    if not endpoint.startswith("tcp://"):
        return None
    host, sep, port = endpoint[len("tcp://"):].rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return Listen(field_name, endpoint, WILDCARD_HOSTS.get(host, host), int(port))


def bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now ("is in use", ...), or None when it could. The probe sets
    SO_REUSEADDR as ZeroMQ and the metrics server do, so only a listening socket (not TIME_WAIT) counts."""
    if host in {name for _index, name in socket.if_nameindex()}:
        return None  # ZeroMQ binds an interface by name (tcp://eth0:5555); its address is not ours to guess
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"names no address this machine can listen on ({exc.strerror})"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be listened on ({exc.strerror})"
    return None


def _overlap(a: Listen, b: Listen) -> bool:
    return a.port == b.port and (a.host == b.host or "0.0.0.0" in (a.host, b.host) or "::" in (a.host, b.host))


def check_listen(addresses: Sequence[Listen]) -> None:
    """InputError naming the field of the first address that two children share or that cannot be listened on
    (another `argusnet up` runs on these ports, say), before anything is started."""
    for i, address in enumerate(addresses):
        other = next((o for o in addresses[:i] if _overlap(o, address)), None)
        if other is not None:
            raise InputError(f"{address.field} {address.value} is also {other.field} ({other.value}): every "
                             "server of `argusnet up` needs a port of its own")
        problem = bind_problem(address.host, address.port)
        if problem is not None:
            raise InputError(f"{address.field} {address.value} {problem}: is another `argusnet up` (or another "
                             "program) running on it? Choose another port in the configuration")


def _serves_metrics(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as response:
            return response.status == 200
    except OSError:  # not listening yet (refused, reset, timed out): the caller polls again
        return False


@dataclass(frozen=True)
class ChildSpec:
    """One component: its name, the `argusnet` arguments that run it, its stop order (lower stops first) and
    where its metrics are served (None when it serves none). Children start by ``start_stage``: a stage starts
    once every child of the stage before it that has ``wait_ready`` serves its metrics (a worker has loaded its
    models), so cameras do not send frames that no worker can take yet."""

    name: str
    args: tuple[str, ...]
    stop_order: int
    metrics_port: int | None = None
    start_stage: int = 0
    wait_ready: bool = False
    metrics_field: str = "metrics port"  # the configuration field metrics_port comes from, for messages
    announce: str | None = None  # a regex: this child's stderr lines that match go to the console with --logs too


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES), repr=False)
    pump: threading.Thread | None = field(default=None, repr=False)


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `up`'s children: PYTHONSAFEPATH=1, so the working directory is not put first on their
    module path (a folder named ``store/`` or ``shared/`` there would shadow ArgusNet's packages), and PYTHONPATH
    led by the folder that holds the running ``argusnet`` package (a checkout, an editable install), unless that
    is a site-packages folder the interpreter searches anyway."""
    import argusnet

    env = dict(os.environ if environ is None else environ)
    env["PYTHONSAFEPATH"] = "1"
    root = str(Path(argusnet.__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in (*site.getsitepackages(), site.getusersitepackages())}
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(rest if root in installed else [root, *rest])
    if not env["PYTHONPATH"]:
        del env["PYTHONPATH"]
    return env


def last_error(lines: Iterable[str]) -> str | None:
    """The last line of a child's stderr that says what went wrong (see ERROR_LINE), or None."""
    return next((line.strip() for line in reversed(list(lines)) if ERROR_LINE.search(line.strip())), None)


class Supervisor:
    """Runs the children; ``run(stop, duration)`` returns when stopped, after stopping every child."""

    def __init__(self, specs: list[ChildSpec], config: Path | None, log_dir: Path | None, log_level: str) -> None:
        self.children = [_Child(s) for s in specs]
        self.config = config
        self.log_dir = log_dir
        self.log_level = log_level
        self._env = child_environment()
        self._console = threading.Lock()  # one line at a time from the children's pumps

    def _command(self, spec: ChildSpec) -> list[str]:
        head = [sys.executable, "-m", "argusnet", "--log-level", self.log_level]
        if self.config is not None:
            head += ["--config", str(self.config)]
        return head + list(spec.args)

    def _start(self, child: _Child) -> None:
        if self.log_dir is not None and child.log_file is None:  # kept open across restarts, closed by stop_all
            child.log_file = open(self.log_dir / f"{child.spec.name}.log", "ab")
        child.tail.clear()
        child.proc = subprocess.Popen(self._command(child.spec), stderr=subprocess.PIPE, env=self._env)
        child.pump = threading.Thread(target=self._pump, args=(child, child.proc.stderr),
                                      name=f"stderr-{child.spec.name}", daemon=True)
        child.pump.start()
        child.restart_at = None
        log.info("started %s (pid %d)", child.spec.name, child.proc.pid)

    def _pump(self, child: _Child, stream: IO[bytes]) -> None:
        """Until the child's stderr closes: each line to its log file (and the console when it matches
        ``announce``), or to this console with each Python traceback cut to its last line; the last TAIL_LINES
        kept for the crash message."""
        announce = re.compile(child.spec.announce) if child.spec.announce else None
        in_traceback = False
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\r\n")
                child.tail.append(line)
                if child.log_file is not None:
                    child.log_file.write(raw)
                    child.log_file.flush()
                    if announce is not None and announce.search(line):
                        self._say(f"argusnet up: {child.spec.name}: {line.split(': ', 1)[-1]}")
                    continue
                if line.startswith(TRACEBACK_START):
                    in_traceback = True
                elif not in_traceback:
                    self._say(line)
                elif line.strip() and not line[:1].isspace():  # the exception itself ends the traceback
                    in_traceback = False
                    self._say(f"{line} (in {child.spec.name}; its traceback is left out: run with --logs DIR "
                              "to keep it)")

    def _say(self, line: str) -> None:
        with self._console:
            print(line, file=sys.stderr, flush=True)

    def _crash_message(self, child: _Child, delay: float) -> str:
        if child.pump is not None:
            child.pump.join(PUMP_JOIN_S)  # the rest of what it wrote before it died
        error = last_error(child.tail)
        said = "" if error is None else f"; its last error: {error}"
        return (f"argusnet up: {child.spec.name} exited with code {child.proc.returncode}; restarting in "
                f"{delay:.0f} s{said}")

    def run(self, stop: threading.Event, duration: float | None) -> int:
        """Start everything, supervise until ``stop`` or ``duration``, stop everything. Exit code 0, or 1 when a
        child was down (crashed, not yet restarted) at the end."""
        try:  # inside the try: a child that cannot start stops those already started
            for stage in sorted({c.spec.start_stage for c in self.children}):
                group = [c for c in self.children if c.spec.start_stage == stage]
                for child in group:
                    self._start(child)
                self._wait_ready([c for c in group if c.spec.wait_ready], stop)
            deadline = None if duration is None else time.monotonic() + duration  # from when the cameras start
            while not stop.wait(POLL_S):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._supervise()
            down = [c.spec.name for c in self.children if c.restart_at is not None]
        finally:
            self.stop_all()
        if down:
            print(f"argusnet up: {', '.join(down)} was down (waiting for a restart) at the end", file=sys.stderr)
        return 1 if down else 0

    def _wait_ready(self, children: list[_Child], stop: threading.Event) -> None:
        """Until each child serves its metrics, exits, ``stop`` is set or READY_TIMEOUT_S passes (then the next
        stage starts anyway: its frames are dropped and counted until a worker is there)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = [c for c in children if c.spec.metrics_port is not None]
        while waiting and not stop.is_set():
            waiting = [c for c in waiting if c.proc is not None and c.proc.poll() is None
                       and not _serves_metrics(c.spec.metrics_port)]
            if waiting and time.monotonic() > deadline:
                print(f"argusnet up: {', '.join(c.spec.name for c in waiting)} not ready after "
                      f"{READY_TIMEOUT_S:.0f} s; starting the cameras anyway", file=sys.stderr, flush=True)
                return
            if waiting:
                stop.wait(POLL_S)

    def _supervise(self) -> None:
        """Restart crashed children after their back-off."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() == 0 and child.restart_at is None:
                continue  # finished on its own (a camera at the end of a non-looping file)
            if child.proc is not None and child.proc.poll() is not None and child.restart_at is None:
                delay = RESTART_BACKOFF_S[min(child.restarts, len(RESTART_BACKOFF_S) - 1)]
                self._say(self._crash_message(child, delay))
                child.restart_at = now + delay
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def stop_all(self) -> None:
        for order in sorted({c.spec.stop_order for c in self.children}):
            group = [c for c in self.children if c.spec.stop_order == order and c.proc is not None]
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGINT)
            for child in group:
                try:
                    child.proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.0f s: killing it", child.spec.name, STOP_GRACE_S)
                    child.proc.kill()
                    child.proc.wait()
        for child in self.children:
            if child.pump is not None:
                child.pump.join(PUMP_JOIN_S)
            if child.log_file is not None:
                child.log_file.close()
                child.log_file = None
