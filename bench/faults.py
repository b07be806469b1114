"""Faults benchmark (issue 24): a real site as subprocesses (`argusnet broker`, `argusnet worker` with the demo
portrait enrolled, the honest demo camera `argusnet camera --source demo --fps 10`) and a subscriber to the live
event stream here, run twice, one fault each:

1. hung Redis: the store is a real redis-server on a free loopback port; after a quiet while it is stopped
   (SIGSTOP: connections open, no answer, as a stuck server or a black-holed network) for --fault-seconds, then
   continued (SIGCONT);
2. full disk: a local store on a small tmpfs (mounting needs root: skipped with a note otherwise), filled with a
   filler file for --fault-seconds, which is then deleted.

After the fault the site runs until the worker's store buffers are empty and --seconds have passed. Measured per
fault: the worker's frames dropped by reason; argusnet_store_dropped_total by kind; the live events of the demo
camera against the events in the store's durable log (matched by camera, track and type: every live event must be
in the log); the demo camera's tracks per walk of the face (the demo loops every 12 s, the face in view for 10 s:
a walk split by the fault shows as two tracks in one period) and each track's duration; the tracking epochs
(TrackEvent.epoch values: one expected); whether the worker took itself for paused (its log: "was stopped for").
Targets (issue 24): no event of the durable log lost, no frame lost to an exception or dropped as stale, nothing
dropped from the store's buffers, every walk one track, one epoch, never paused.

Run: argusnet bench faults --json out/bench-faults.json [--seconds 20] [--fault-seconds 20]
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
import zmq

from argusnet.launcher import free_port
from bench.common import emit, parser
from bench.overload import worker_metrics
from camera_node.demo import ABSENT_S, PERIOD_S
from shared import metrics as m
from shared.protocol import TrackEvent, decode
from store.config import LocalStoreConfig, RedisStoreConfig, StoreConfig

REPO = Path(__file__).resolve().parents[1]
CAMERA = "demo"
START_S = 180.0  # model load (and the dlib ONNX export on a first run), the first walk named
DRAIN_S = 60.0  # how long the buffers may take to drain after the fault
LOG_MATCH_S = 30.0  # how long the live events may take to show in the store's log once the buffers drained
DISK_SIZE = "64m"  # the full-disk run's tmpfs
PAUSED_LINE = "was stopped for"
WALK_S = PERIOD_S - ABSENT_S  # the face is in view this long of each period


@dataclass(frozen=True)
class Seen:
    """One event of the demo camera as the live stream delivered it."""

    event: TrackEvent
    received: float


@dataclass
class Live:
    """The live event stream's demo-camera events, filled by the subscriber thread."""

    events: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.events)


class Site:
    """Configuration, processes and logs of one fault run's site, all under ``tmp`` (plaintext, loopback)."""

    def __init__(self, tmp: Path, store: StoreConfig) -> None:
        self.tmp = tmp
        self.store = store
        self.ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "broker", "w1")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.config = tmp / "site.yaml"
        broker = {name: self.endpoint(name) for name in ("frontend", "backend", "events_in", "events_out")}
        self.config.write_text(yaml.safe_dump({"broker": broker | {"metrics_port": self.ports["broker"]},
                                               "store": store.model_dump(mode="json", exclude_defaults=True)
                                               | {"type": store.type}}))

    def endpoint(self, name: str) -> str:
        return f"tcp://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "argusnet", "--config", str(self.config),
                                                 *args], cwd=REPO, env=env, stdout=log, stderr=log)

    def log_text(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def metric(self, family: str, label: str) -> dict[str, float]:
        """The worker's ``family`` summed by ``label``, the series that counted nothing left out."""
        out: dict[str, float] = {}
        for labels, value in worker_metrics(self.ports["w1"]).get(family, []):
            if value:
                out[labels[label]] = out.get(labels[label], 0.0) + value
        return out

    def buffered(self) -> int:
        """Writes waiting in the worker's store buffers."""
        return int(sum(v for _, v in worker_metrics(self.ports["w1"]).get(m.STORE_BUFFER_DEPTH, [])))

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        for name in (CAMERA, "w1", "broker"):  # the camera first: the worker sees no frame it cannot finish
            if name in self.procs:
                self.stop(name)


def events_loop(site: Site, stop: threading.Event, live: Live) -> None:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, CAMERA.encode())
    sock.connect(site.endpoint("events_out"))
    while not stop.is_set():
        if not sock.poll(200):
            continue
        event = decode(sock.recv_multipart()[-1], 1 << 20)
        if isinstance(event, TrackEvent) and event.camera == CAMERA:
            with live.lock:
                live.events.append(Seen(event, time.time()))
    sock.close(0)


def start_site(site: Site) -> None:
    """Enrol the demo portrait in the site's store, start broker, worker and the demo camera."""
    from argusnet.commands.demo import enrol_demo_person
    from argusnet.config import load_config
    from gpu_worker.engine import Engine

    enrol_demo_person(Engine(load_config(environ={})), site.store).close()
    site.start("broker", "broker")
    site.start("w1", "worker", "--id", "w1", "--metrics-port", str(site.ports["w1"]))
    site.start(CAMERA, "camera", "--id", CAMERA, "--source", "demo", "--fps", "10", "--broker",
               site.endpoint("frontend"))


def wait_for(what: str, done: Callable[[], bool], timeout: float, site: Site) -> None:
    """Poll ``done`` every 0.5 s; RuntimeError with the processes' logs when a process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline or any(p.poll() is not None for p in site.procs.values()):
            tails = "\n".join(f"--- {n}:\n{site.log_text(n)[-3000:]}" for n in site.procs)
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s:\n{tails}")
        time.sleep(0.5)


def drained(site: Site, not_before: float, times: Timeline) -> Callable[[], bool]:
    """Whether the worker's store buffers are empty and ``not_before`` passed; ``times.drained``: since when they
    have been empty (0.0 while they are not)."""
    def check() -> bool:
        try:
            depth = site.buffered()
        except OSError:
            return False
        now = time.time()
        times.drained = (times.drained or now) if depth == 0 else 0.0
        return now >= not_before and depth == 0
    return check


# ----------------------------------------------------------------------------------------------------- faults
@dataclass(frozen=True)
class Fault:
    """One fault: ``begin`` breaks the store, ``end`` mends it."""

    name: str
    begin: Callable[[], None]
    end: Callable[[], None]


def hung_redis(process: subprocess.Popen) -> Fault:
    return Fault("hung_redis", lambda: process.send_signal(signal.SIGSTOP),
                 lambda: process.send_signal(signal.SIGCONT))


def fill(directory: Path) -> Path:
    """A filler file written in ``directory`` until its file system is full (ENOSPC)."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def full_disk(mount: Path) -> Fault:
    return Fault("full_disk", lambda: fill(mount), lambda: (mount / "filler").unlink())


# ----------------------------------------------------------------------------------------------------- one run
@dataclass
class Timeline:
    """When (unix s) each part of a run began."""

    first_event: float = 0.0
    fault_start: float = 0.0
    fault_end: float = 0.0
    drained: float = 0.0  # the worker's store buffers empty again
    snapshot: float = 0.0


def run_fault(site: Site, fault: Callable[[], Fault], args: Any, fault_name: str) -> dict[str, Any]:
    """Run the site through ``fault`` (made once the site runs); the measurements."""
    stop, live, times = threading.Event(), Live(), Timeline()
    threading.Thread(target=events_loop, args=(site, stop, live), daemon=True).start()
    try:
        start_site(site)
        wait_for("an event of the demo camera", lambda: bool(live.events), START_S, site)
        times.first_event = time.time()
        breaker = fault()
        wait_for("the quiet part", lambda: time.time() >= times.first_event + args.seconds, args.seconds + 10, site)
        times.fault_start = time.time()
        breaker.begin()
        try:
            buffered = sample_buffers(site, times.fault_start + args.fault_seconds)
        finally:
            breaker.end()
        times.fault_end = time.time()
        wait_for("the store buffers draining", drained(site, times.fault_end + args.seconds, times),
                 DRAIN_S + args.seconds, site)
        seen = live.snapshot()
        times.snapshot = time.time()
        logged = logged_events(site.store, seen, times.first_event - START_S)
        counters = {"store_buffer_max": buffered, "frames_dropped": site.metric(m.FRAMES_DROPPED, "reason"),
                    "store_dropped": site.metric(m.STORE_DROPPED, "kind"),
                    "events_dropped": site.metric(m.EVENTS_DROPPED, "reason"),
                    "store_errors": site.metric(m.STORE_ERRORS, "operation")}
    finally:
        stop.set()
        site.close()
        if args.logs is not None:
            keep_logs(site, args.logs / fault_name)
    return measure(times, seen, logged, counters, log_summary(site.log_text("w1")))


def keep_logs(site: Site, directory: Path) -> None:
    """Copy the site's process logs to ``directory`` (--logs)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in site.procs:
        shutil.copy(site.tmp / f"{name}.log", directory / f"{name}.log")


def sample_buffers(site: Site, until: float) -> dict[str, float]:
    """The most writes waiting in each of the worker's store buffers, sampled every second until ``until`` (the
    fault's end): that the fault made the worker buffer."""
    most: dict[str, float] = {}
    while time.time() < until:
        for labels, value in worker_metrics(site.ports["w1"]).get(m.STORE_BUFFER_DEPTH, []):
            most[labels["kind"]] = max(most.get(labels["kind"], 0.0), value)
        time.sleep(max(0.0, min(1.0, until - time.time())))
    return most


def log_summary(text: str) -> dict[str, int]:
    """What the worker's log says: its lines, warnings, tracebacks, and "was stopped for" (it took itself for
    paused)."""
    lines = text.splitlines()
    return {"lines": len(lines), "warnings": sum(" WARNING " in line for line in lines),
            "tracebacks": text.count("Traceback (most recent call last)"), "paused": text.count(PAUSED_LINE)}


def logged_events(cfg: StoreConfig, seen: list[Seen], since: float) -> list[TrackEvent]:
    """The demo camera's events in the store's durable log, polled until every live event in ``seen`` is there
    or LOG_MATCH_S passed."""
    from store import open_store
    from store.config import GalleryConfig
    from store.types import EventQuery

    deadline = time.monotonic() + LOG_MATCH_S
    with open_store(cfg, GalleryConfig()) as store:
        while True:
            found = [e.event for e in store.events.query(EventQuery(camera=CAMERA, since=since, limit=10_000,
                                                                    oldest_first=True))]
            if not missing(seen, found) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def key(event: TrackEvent) -> tuple[str, int, str]:
    return event.camera, event.track, event.type


def missing(seen: list[Seen], logged: list[TrackEvent]) -> list[tuple[str, int, str]]:
    """Live events (camera, track, type) the log does not hold (counted: two live events need two logged)."""
    left = Counter(key(s.event) for s in seen) - Counter(key(e) for e in logged)
    return sorted(left.elements())


# ----------------------------------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class Track:
    """One demo-camera track as the durable log holds it."""

    track: int
    first: float  # capture_ts of its first event
    last: float  # capture_ts of its last event
    duration_s: float | None  # from its track_ended, None while it had not ended
    epoch: int | None

    @property
    def middle(self) -> float:
        return (self.first + self.last) / 2.0


def tracks_of(logged: list[TrackEvent]) -> list[Track]:
    by_track: dict[int, list[TrackEvent]] = {}
    for event in logged:
        by_track.setdefault(event.track, []).append(event)
    out = []
    for track, events in by_track.items():
        ended = [e for e in events if e.type == "track_ended"]
        starts = [e.capture_ts for e in events if e.type == "track_started"] or [e.capture_ts for e in events]
        end = ended[-1].capture_ts if ended else max(e.capture_ts for e in events)
        first = min(starts)
        out.append(Track(track, first, end, ended[-1].duration_s if ended else None, events[0].epoch))
    return sorted(out, key=lambda t: t.first)


def walks(tracks: list[Track], start: float, end: float) -> list[dict[str, Any]]:
    """The demo face's walks that lay wholly in [start, end], each with its tracks. The walks' phase comes from the
    longest ended track no longer than a walk (its middle is a walk's middle); each track belongs to the walk whose
    middle is nearest its own."""
    whole = [t for t in tracks if t.duration_s is not None and t.duration_s <= WALK_S + 1.0]
    if not whole:
        return []
    anchor = max(whole, key=lambda t: t.duration_s or 0.0).middle
    index = {t.track: round((t.middle - anchor) / PERIOD_S) for t in tracks}
    first = math.ceil((start + WALK_S / 2 - anchor) / PERIOD_S)
    out = []
    k = first
    while anchor + k * PERIOD_S + WALK_S / 2 <= end:
        middle = anchor + k * PERIOD_S
        mine = [t for t in tracks if index[t.track] == k]
        out.append({"walk": k - first, "from_s": round(middle - WALK_S / 2 - start, 1),
                    "to_s": round(middle + WALK_S / 2 - start, 1), "tracks": len(mine),
                    "track_durations_s": [round(t.duration_s, 1) if t.duration_s is not None else None
                                          for t in mine]})
        k += 1
    return out


def measure(times: Timeline, seen: list[Seen], logged: list[TrackEvent], counters: dict[str, dict[str, float]],
            worker_log: dict[str, int]) -> dict[str, Any]:
    start = times.first_event
    tracks = tracks_of(logged)
    run_walks = walks(tracks, start, times.snapshot)
    lost = missing(seen, logged)
    epochs = sorted(({s.event.epoch for s in seen} | {e.epoch for e in logged}) - {None})
    for walk in run_walks:
        walk["during_fault"] = walk["from_s"] < times.fault_end - start and walk["to_s"] > times.fault_start - start
    dropped = counters["frames_dropped"]
    return {"seconds": {"quiet": round(times.fault_start - start, 1),
                        "fault": round(times.fault_end - times.fault_start, 1),
                        "buffers_drained_after_fault": round(max(0.0, times.drained - times.fault_end), 1),
                        "run": round(times.snapshot - start, 1)},
            "fault_s": [round(times.fault_start - start, 1), round(times.fault_end - start, 1)],
            "live_events": len(seen), "logged_events": len(logged),
            "live_events_missing_from_log": len(lost), "missing": [list(k) for k in lost[:20]],
            "frames_dropped_by_reason": dropped, "store_dropped_by_kind": counters["store_dropped"],
            "events_dropped_by_reason": counters["events_dropped"], "store_errors": counters["store_errors"],
            "store_buffer_max_during_fault": counters["store_buffer_max"],
            "tracks": len(tracks), "walks": run_walks,
            "track_durations_s": [round(t.duration_s, 1) if t.duration_s is not None else None for t in tracks],
            "epochs": len(epochs), "worker_log": worker_log,
            "targets": {"no_live_event_missing_from_log": not lost and bool(seen),
                        "no_processing_error_drop": not dropped.get("processing_error"),
                        "no_stale_drop": not dropped.get("stale"),
                        "no_store_buffer_drop": not any(counters["store_dropped"].values()),
                        "every_walk_one_track": bool(run_walks) and all(w["tracks"] == 1 for w in run_walks),
                        "one_epoch": len(epochs) == 1, "worker_never_paused": worker_log["paused"] == 0,
                        "no_traceback_in_worker_log": worker_log["tracebacks"] == 0}}


# ----------------------------------------------------------------------------------------------------- the runs
def redis_run(args: Any, tmp: Path) -> dict[str, Any]:
    from bench.store import start_redis

    server = start_redis()
    try:
        site = Site(tmp, RedisStoreConfig(url=server.url, prefix="faults"))
        return run_fault(site, lambda: hung_redis(server.process), args, "hung_redis")
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()


def disk_run(args: Any, tmp: Path) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"skipped": "mounting a small file system (tmpfs) for the full disk needs root; run as root"}
    mount = tmp / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)], check=True)
    try:
        site = Site(tmp, LocalStoreConfig(path=mount / "store"))
        return {"tmpfs_size": DISK_SIZE, **run_fault(site, lambda: full_disk(mount), args, "full_disk")}
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="quiet time before the fault, and at least as long "
                   "after it (the buffers must also have drained)")
    p.add_argument("--fault-seconds", type=float, default=20.0, help="how long each fault lasts")
    p.add_argument("--logs", type=Path, metavar="DIR", help="keep the processes' logs here (DIR/FAULT/NAME.log)")
    p.add_argument("--only", choices=("hung_redis", "full_disk"), help="run one fault only")
    args = p.parse_args(argv)
    runs = {"hung_redis": redis_run, "full_disk": disk_run}
    out: dict[str, Any] = {"benchmark": "faults", "seconds": args.seconds, "fault_seconds": args.fault_seconds}
    for name, run in runs.items():
        if args.only in (None, name):
            with tempfile.TemporaryDirectory(prefix=f"argusnet-faults-{name}-") as tmp:
                out[name] = run(args, Path(tmp))
    out["targets"] = {f"{name}.{target}": ok for name in runs if isinstance(out.get(name), dict)
                      for target, ok in out[name].get("targets", {}).items()}
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
