"""The dashboard's live path: event log -> row in a real browser (ms), and many live clients at a steady event rate.

A real `argusnet dashboard` process serves a local store in a temporary directory; this process appends
`track_identified` events to the store's durable event log (``store.events.append`` of ``EventRecord``s, as a
worker's TrackRecorder does), each stamped with the time just before its append (its ``ts``). The dashboard reads
the log every ``dashboard.poll_s`` (0.2 s) and pushes new events to browsers as Server-Sent Events.

- latency: a headless Chromium (Debian's /usr/bin/chromium through Playwright), logged in on /recognitions; a
  MutationObserver in the page records when each event's row (``tr[data-id]``) first appears
  (performance.timeOrigin + performance.now()); ``--events`` events (default 100), one every ``--interval`` s;
  p50/p95 of publish -> row (target: p95 <= 500 ms).
- load: ``--rate`` events/s (default 50) for ``--seconds`` (default 60) with ``--clients`` (default 20) live
  clients (plain sockets reading /api/stream with a session cookie, one thread each): the dashboard's RSS every 5 s
  from /proc/PID/status (first/last/max), each client's largest lag (receive time - event ts), whether any client
  fell behind by more than 1 s, and whether every client received every event (a client the dashboard drops for
  falling behind reconnects with Last-Event-ID; counted).

Run: argusnet bench dashboard --json out/bench-dashboard.json [--seconds 60] [--clients 20] [--rate 50]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from argusnet.launcher import free_port
from bench.common import emit, parser
from shared.errors import InputError
from shared.protocol import TrackEvent
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.types import EventRecord

DIM = 8
USER = "bench"
CHROMIUM = Path("/usr/bin/chromium")
# as tests/browser.py: nothing that phones home, no GPU; no sandbox as root (Chromium refuses it)
CHROMIUM_ARGS = ("--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")
TARGET_P95_MS = 500.0
BEHIND_S = 1.0
RSS_EVERY_S = 5.0
CAMERA = "bench"


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))]


def make_event(track: int, now: float) -> TrackEvent:
    return TrackEvent(type="track_identified", camera=CAMERA, track=track, name="Bench Person", similarity=0.9,
                      margin=0.2, ts=now, capture_ts=now - 0.05, box=(10.0, 10.0, 90.0, 110.0), time_to_name_ms=120.0,
                      duration_s=0.2, visitor=False, worker="bench")


@dataclass
class Site:
    """The store (this process writes its event log), the dashboard process serving it, and a logged-in cookie."""

    directory: Path
    store: Any
    proc: subprocess.Popen
    port: int
    password: str
    cookie: str = ""
    track: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def publish(self) -> int:
        """One track_identified event appended to the log; its id."""
        self.track += 1
        return self.store.events.append([EventRecord(make_event(self.track, time.time()), None, "bench")])[0]

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def log_in(self) -> str:
        """The session cookie (argusnet_session=...) of USER."""
        body = urllib.parse.urlencode({"username": USER, "password": self.password, "next": "/live"}).encode()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(urllib.request.Request(self.base + "/login", data=body), timeout=30)
        except urllib.error.HTTPError as exc:  # the 303 to /live, with the cookie
            cookie = exc.headers.get("Set-Cookie", "")
            if exc.code == 303 and cookie:
                self.cookie = cookie.split(";", 1)[0]
                return self.cookie
            raise RuntimeError(f"login as {USER} answered {exc.code}") from exc
        raise RuntimeError("login did not redirect")


def _wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the dashboard did not answer /healthz within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def site(root: Path) -> Iterator[Site]:
    """A fresh local store with one viewer, and `argusnet dashboard` on a free loopback port (stopped on exit)."""
    from dashboard.users import UserFile

    directory = root / "store"
    store = open_store(LocalStoreConfig(path=directory), GalleryConfig(), "bench", DIM, create=True)
    password = secrets.token_urlsafe(18)
    UserFile(directory / "dashboard-users.json").add(USER, "viewer", password)
    port = free_port()
    log = root / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "argusnet", "dashboard", "--gallery", str(directory),
                                 "--listen", f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proc, port, log)
        one = Site(directory, store, proc, port, password)
        one.log_in()
        yield one
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        store.close()


# ----------------------------------------------------------------------------------------------------- latency

OBSERVE_ROWS = """() => {
  window.rowAt = {};
  const tbody = document.querySelector("#events tbody");
  new MutationObserver((records) => {
    const now = performance.timeOrigin + performance.now();
    for (const r of records) for (const n of r.addedNodes)
      if (n.dataset && n.dataset.id && !(n.dataset.id in window.rowAt)) window.rowAt[n.dataset.id] = now;
  }).observe(tbody, {childList: true});
  return true;
}"""


@contextlib.contextmanager
def _chromium() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        raise InputError(f"{CHROMIUM} not found: this benchmark drives Debian's Chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = [*(("--no-sandbox",) if os.geteuid() == 0 else ()), *CHROMIUM_ARGS]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def measure_latency(one: Site, events: int, interval_s: float) -> dict[str, Any]:
    with _chromium() as browser:
        context = browser.new_context(base_url=one.base)
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", one.password)
        page.click("button[type=submit]")
        page.wait_for_url("**/live")
        page.goto("/recognitions")
        page.wait_for_load_state("networkidle")
        page.evaluate(OBSERVE_ROWS)
        published: dict[int, float] = {}
        for _ in range(events):
            started = time.time()
            event_id = one.publish()
            published[event_id] = started
            time.sleep(max(0.0, interval_s - (time.time() - started)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(page.evaluate("() => window.rowAt")) < events:
            time.sleep(0.1)
        seen = page.evaluate("() => window.rowAt")
        version = browser.version
    ms = [seen[str(i)] - t * 1000.0 for i, t in published.items() if str(i) in seen]
    if not ms:
        raise RuntimeError("no published event appeared on the Recognitions page")
    p95 = percentile(ms, 95)
    return {"events": events, "rows_seen": len(ms), "interval_s": interval_s, "browser": f"Chromium {version}",
            "p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(p95, 1), "max_ms": round(max(ms), 1),
            "min_ms": round(min(ms), 1), "target_p95_ms": TARGET_P95_MS, "within_target": p95 <= TARGET_P95_MS}


# -------------------------------------------------------------------------------------------------------- load

@dataclass
class StreamClient:
    """One live client: a plain socket reading /api/stream (SSE), reconnecting with Last-Event-ID when dropped."""

    one: Site
    stop: threading.Event
    received: int = 0
    max_lag_s: float = 0.0
    behind: int = 0  # events received more than BEHIND_S after their ts
    reconnects: int = 0
    last_id: int = 0
    error: str | None = None
    ids: set[int] = field(default_factory=set)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self._read_stream()
                if not self.stop.is_set():
                    self.reconnects += 1
        except (OSError, ValueError) as exc:
            if not self.stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"

    def _read_stream(self) -> None:
        headers = ["GET /api/stream HTTP/1.0", f"Host: 127.0.0.1:{self.one.port}", f"Cookie: {self.one.cookie}",
                   "Accept: text/event-stream"]
        if self.last_id:
            headers.append(f"Last-Event-ID: {self.last_id}")
        with socket.create_connection(("127.0.0.1", self.one.port), timeout=2.0) as sock:
            sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
            pending = b""
            status_seen = False
            while not self.stop.is_set():
                try:
                    data = sock.recv(65536)
                except socket.timeout:  # nothing for 2 s: look at the stop flag, read on
                    continue
                if not data:
                    return  # the dashboard ended the stream
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if not status_seen:
                        status_seen = True
                        if b" 200 " not in line:
                            raise ValueError(f"/api/stream answered {line!r}")
                    self._line(line)

    def _line(self, line: bytes) -> None:
        """An SSE line (HTTP/1.0: the body is the plain event stream, no chunk framing); only ``data:`` lines
        matter here."""
        if not line.startswith(b"data: "):
            return
        now = time.time()
        event = json.loads(line[6:])
        if event["id"] in self.ids:
            return
        self.ids.add(event["id"])
        self.last_id = max(self.last_id, event["id"])
        self.received += 1
        lag = now - event["ts"]
        self.max_lag_s = max(self.max_lag_s, lag)
        self.behind += lag > BEHIND_S


def _publish_at(one: Site, rate: float, seconds: float, ids: list[int]) -> None:
    period, start = 1.0 / rate, time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        ids.append(one.publish())
        n += 1
        time.sleep(max(0.0, start + n * period - time.monotonic()))


def measure_load(one: Site, clients: int, rate: float, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    readers = [StreamClient(one, stop) for _ in range(clients)]
    threads = [threading.Thread(target=r.run, daemon=True) for r in readers]
    for t in threads:
        t.start()
    time.sleep(2.0)  # every client connected and subscribed before the first event
    ids: list[int] = []
    publisher = threading.Thread(target=_publish_at, args=(one, rate, seconds, ids), daemon=True)
    rss: list[int] = [one.rss_kb()]
    publisher.start()
    while publisher.is_alive():
        publisher.join(RSS_EVERY_S)
        rss.append(one.rss_kb())
    deadline = time.monotonic() + 10  # the last events reach every client
    while time.monotonic() < deadline and any(len(r.ids) < len(ids) for r in readers):
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(5)
    per_client = [{"received": r.received, "max_lag_ms": round(r.max_lag_s * 1000.0, 1), "behind_1s": r.behind,
                   "reconnects": r.reconnects, "error": r.error} for r in readers]
    return {"seconds": seconds, "rate_per_s": rate, "clients": clients, "published": len(ids),
            "achieved_rate_per_s": round(len(ids) / seconds, 1),
            "rss_kb": {"first": rss[0], "last": rss[-1], "max": max(rss), "samples": rss, "every_s": RSS_EVERY_S},
            "max_lag_ms": max(c["max_lag_ms"] for c in per_client),
            "any_client_behind_1s": any(r.behind for r in readers),
            "every_client_got_every_event": all(r.ids >= set(ids) for r in readers),
            "per_client": per_client}


def _summary(result: dict[str, Any]) -> str:
    lat, load = result["latency"], result["load"]
    rss = load["rss_kb"]
    return (f"publish -> row in Chromium: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms over {lat['rows_seen']}/"
            f"{lat['events']} events (target p95 <= {TARGET_P95_MS:.0f} ms: "
            f"{'met' if lat['within_target'] else 'MISSED'})\n"
            f"{load['clients']} SSE clients at {load['achieved_rate_per_s']} events/s for {load['seconds']:.0f} s: "
            f"max lag {load['max_lag_ms']} ms, behind > 1 s: {'yes' if load['any_client_behind_1s'] else 'no'}, "
            f"every event to every client: {'yes' if load['every_client_got_every_event'] else 'no'} "
            f"({sum(c['reconnects'] for c in load['per_client'])} reconnects, "
            f"{sum(c['error'] is not None for c in load['per_client'])} client errors); dashboard RSS "
            f"{rss['first'] / 1024:.1f} -> {rss['last'] / 1024:.1f} MiB (max {rss['max'] / 1024:.1f})")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the load phase (default 60)")
    p.add_argument("--clients", type=int, default=20, help="live SSE clients in the load phase (default 20)")
    p.add_argument("--rate", type=float, default=50.0, help="events/s in the load phase (default 50)")
    p.add_argument("--events", type=int, default=100, help="events timed in the browser (default 100)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between timed events (default 0.1)")
    args = p.parse_args(argv)
    for name, value, low, high in (("--seconds", args.seconds, 1, 3600), ("--clients", args.clients, 1, 100),
                                   ("--rate", args.rate, 0.1, 1000), ("--events", args.events, 1, 10000),
                                   ("--interval", args.interval, 0.0, 10)):
        if not low <= value <= high:
            raise InputError(f"{name}: expected {low}..{high}, got {value}")
    with tempfile.TemporaryDirectory(prefix="argusnet-bench-dash-") as tmp, site(Path(tmp)) as one:
        latency = measure_latency(one, args.events, args.interval)
        load = measure_load(one, args.clients, args.rate, args.seconds)
    result = {"benchmark": "dashboard", "latency": latency, "load": load}
    emit(result, args.json)
    print(_summary(result))
    return 0
