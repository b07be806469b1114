"""Hosts as Linux network namespaces for the multi-host tests: one "switch" namespace holding a bridge, and one
namespace per host joined to it by a veth pair (``eth0`` in the host, ``p-HOST`` on the bridge), on one small
test subnet with no default route, so nothing leaves the namespaces the test made.

Processes run in a host with ``ip netns exec NS ...`` (which execs the command: the Popen's pid is the process
itself). The test process reaches a host's loopback (metrics, Redis) from a short-lived thread that joined the
host's namespace with setns(2): a network namespace is per thread, so the rest of the test process stays where it
was. Namespace names carry the test process's pid (``argusnet-PID-HOST``), so parallel runs do not clash; those of
runs that died without cleaning up (their pid gone) are removed by the next run.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable, TypeVar

PREFIX = "argusnet"
CLONE_NEWNET = 0x40000000
HOST_IF = "eth0"
BRIDGE = "br0"
T = TypeVar("T")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None when they can: a probe namespace was made and removed)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns): the test runs as root in CI"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add {probe}` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_all_in(ns: str) -> None:
    """SIGKILL every process still in namespace ``ns`` (only namespaces this module made get here)."""
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def sweep_stale() -> None:
    """Remove the namespaces (and what still runs in them) of earlier runs whose test process is gone."""
    pattern = re.compile(rf"^{PREFIX}-(\d+)-")
    for ns in _namespaces():
        found = pattern.match(ns)
        if found and int(found.group(1)) != os.getpid() and not _pid_alive(int(found.group(1))):
            _kill_all_in(ns)
            _ip("netns", "del", ns, check=False)


_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
    """``fn()`` run in a new thread that joined network namespace ``ns`` (every socket it opens is there)."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"a call in namespace {ns} did not return within {timeout} s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


class Network:
    """A bridge in a switch namespace and one namespace per host on ``subnet`` (hosts get its addresses in order).
    ``close()`` stops every process started here, then deletes every namespace (and with them the veths and the
    bridge); it is safe to call after a partial build."""

    def __init__(self, hosts: list[str], subnet: str, logs: Path) -> None:
        net = ipaddress.ip_network(subnet)
        addresses = list(net.hosts())
        if len(hosts) > len(addresses):
            raise ValueError(f"{subnet} has room for {len(addresses)} hosts, not {len(hosts)}")
        self.prefixlen = net.prefixlen
        self.addresses = {h: str(a) for h, a in zip(hosts, addresses)}
        self.logs = logs
        self.tag = f"{PREFIX}-{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.procs: dict[str, subprocess.Popen] = {}
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def ip(self, host: str) -> str:
        return self.addresses[host]

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def build(self) -> None:
        """Make the namespaces and links; CalledProcessError (with ip's message) when the kernel refuses."""
        self._add_ns(self.switch)
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for host, address in self.addresses.items():
            ns = self.ns(host)
            self._add_ns(ns)
            port = f"p-{host}"[:15]
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", HOST_IF, "netns", ns)
            _ip("-n", self.switch, "link", "set", port, "master", BRIDGE, "up")
            _ip("-n", ns, "addr", "add", f"{address}/{self.prefixlen}", "dev", HOST_IF)
            _ip("-n", ns, "link", "set", HOST_IF, "up")

    def link(self, host: str, up: bool) -> None:
        """Bring a host's only link (its ``eth0``) up or down: down cuts the host off the network."""
        _ip("-n", self.ns(host), "link", "set", HOST_IF, "up" if up else "down")

    def start(self, host: str, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        """Start ``argv`` in ``host``'s namespace, its output to LOGS/NAME.log."""
        if name in self.procs and self.procs[name].poll() is None:
            raise ValueError(f"{name} is already running")
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *argv], env=env, cwd=cwd, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def run(self, host: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``argv`` in ``host``'s namespace to its end; its output captured."""
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def stop(self, name: str, sig: int = signal.SIGINT, timeout: float = 15) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} did not stop within {timeout} s after signal {sig}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def call(self, host: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
        return in_netns(self.ns(host), fn, timeout)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in reversed(self.made):
            _kill_all_in(ns)  # anything a process left behind
            _ip("netns", "del", ns, check=False)
        self.made.clear()
