"""Soak benchmark: a real `argusnet up` site for --minutes: per-process RSS and fds, p95 drift, events, drops.

`argusnet --config TMP/site.yaml up` (broker, --workers workers, --cameras cameras, the event printer and the
dashboard, every port free on 127.0.0.1) is left running for --minutes and sampled every --sample-s seconds, to
show that nothing grows or drifts.

Cameras: half of them the built-in ``demo`` source (Eileen Collins, identified every 12 s), the other half a
looping clip of ../shared/data/facenet-pytorch/arcade.mp4 (cut here to 960x540 MJPG: strangers who become
visitors) when that file is present, else all ``demo``; every camera sends at --fps (default 3: 6 cameras at 10 fps
overload 2 cores, and a soak of an overloaded site measures its queues, not its leaks).

Per sample and per process (the children of `up`, found by their parent PID in /proc/*/stat, named from their
command line; `up` itself as ``up``): RSS (VmRSS) and open file descriptors (/proc/PID/fd); a process whose PID
changed (restarted by `up`) or that is gone is reported. Over the window since the previous sample: end-to-end
latency p50/p95 (``latency_ms`` of the track_started / track_identified lines of `up`'s --events-jsonl: capture
on the camera -> event printed), events per camera and per minute, and frames dropped per minute
(``argusnet_frames_dropped_total`` of the broker and the workers, summed and per reason; a counter that went back,
a restarted process, counts from 0; the cameras' own drops separately).

Summary, with W = min(5 min, run / 3) (5 min on runs of 15 min or more, the closest windows on shorter ones):
RSS growth of each process from the first sample at >= W to the last; file descriptors flat (the last sample at
most FD_SLACK above the one at W); p95 drift (p95 of the events in [D - W, D] against [W, 2 W], D = run length);
every camera has at least one event in every full minute. Targets: RSS growth <= 5 %, descriptors flat, p95 drift
<= 20 %, events every minute (plus: no restarts).

`up` is stopped with SIGINT at the end (its process group killed if it does not stop within STOP_TIMEOUT_S); on
Ctrl-C or SIGTERM the run stops early, `up` is stopped the same way and the samples so far are written
(``interrupted: true``). Nothing it started is left running.

Run: argusnet bench soak --minutes 30 --json out/bench-soak.json [--sample-s 30] [--cameras 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import yaml

from argusnet.launcher import free_port
from bench.common import emit, parser
from shared.errors import InputError

REPO = Path(__file__).resolve().parents[1]
ARCADE = REPO.parent / "shared" / "data" / "facenet-pytorch" / "arcade.mp4"
CLIP_SIDE = (960, 540)  # arcade.mp4 is 1920x1080 H.264: a small MJPG clip keeps the cameras' decoding cheap
DEFAULT_FPS = 3.0
START_TIMEOUT_S = 300.0  # `up` enrols the demo portrait, then the workers load their models
FIRST_EVENTS_TIMEOUT_S = 120.0  # after the workers are ready: until every camera has had an event
STOP_TIMEOUT_S = 60.0  # `up` stops cameras, workers, broker, printer in turn, each within 10 s
WARM_S = 300.0
FD_SLACK = 4  # transient descriptors: a metrics scrape being served, a log or clip file being reopened
RSS_TARGET_PCT, P95_TARGET_PCT = 5.0, 20.0
LATENCY_TYPES = ("track_started", "track_identified")
DROPPED, FRAMES_OUT = "argusnet_frames_dropped_total", "argusnet_frames_out_total"
SUBCOMMANDS = ("broker", "worker", "camera", "events", "dashboard")


def check_args(args: argparse.Namespace) -> None:
    bounds = (("--minutes", args.minutes, 0.1, 24 * 60.0), ("--sample-s", args.sample_s, 1.0, 3600.0),
              ("--cameras", args.cameras, 1, 64), ("--workers", args.workers, 1, 16), ("--fps", args.fps, 1.0, 30.0))
    for name, value, low, high in bounds:
        if not low <= value <= high:
            raise InputError(f"{name} must be in [{low}, {high}], got {value}")
    if args.sample_s > args.minutes * 60:
        raise InputError(f"--sample-s {args.sample_s} is longer than the run (--minutes {args.minutes})")


# --- processes, from /proc ---------------------------------------------------------------------------------------

def ppid_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the name in parentheses may hold spaces and parentheses


def children_of(parent: int) -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and ppid_of(int(d)) == parent]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def subcommand(rest: list[str]) -> str | None:
    """The `argusnet` subcommand in the arguments after ``argusnet`` (global options and their values skipped)."""
    i = 0
    while i < len(rest):
        if rest[i] in ("--log-level", "--config"):
            i += 2
        elif rest[i].startswith("-"):
            i += 1
        else:
            return rest[i]
    return None


def role(argv: list[str], camera_ids: list[str]) -> tuple[str, str, int | None] | None:
    """(subcommand, name, metrics port) of an `argusnet` child from its command line; None for anything else."""
    if "argusnet" not in argv:
        return None
    rest = argv[argv.index("argusnet") + 1:]
    sub = subcommand(rest)
    if sub not in SUBCOMMANDS:
        return None
    port = option(rest, "--metrics-port")
    name = sub
    if sub == "worker":
        name = option(rest, "--id") or "worker"
    elif sub == "camera":
        index = option(rest, "--index") or ""
        name = f"camera-{camera_ids[int(index)]}" if index.isdigit() and int(index) < len(camera_ids) else "camera"
    return sub, name, (int(port) if port is not None and port.isdigit() else None)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def scrape(port: int) -> dict[str, list[tuple[dict, float]]] | None:
    """sample name -> [(labels, value)] from http://127.0.0.1:port/metrics; None when it does not answer."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


# --- the site ----------------------------------------------------------------------------------------------------

def cut_clip(source: Path, target: Path) -> Path:
    """arcade.mp4 at 960x540, MJPG AVI, every frame (4.2 s at 25 fps, looped by the camera)."""
    import cv2

    cap = cv2.VideoCapture(str(source))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), cap.get(cv2.CAP_PROP_FPS) or 25,
                             CLIP_SIDE)
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, CLIP_SIDE, interpolation=cv2.INTER_AREA))
        frames += 1
    cap.release()
    writer.release()
    if frames < 25:
        raise RuntimeError(f"read only {frames} frames from {source}")
    return target


def camera_list(n: int, fps: float, clip: Path | None) -> list[dict[str, Any]]:
    files = 0 if clip is None else n // 2
    cams = [{"id": f"demo-{i + 1}", "source": "demo"} for i in range(n - files)]
    cams += [{"id": f"arcade-{i + 1}", "source": str(clip), "loop": True} for i in range(files)]
    return [{**c, "fps": fps, "min_fps": 1.0, "metrics_port": free_port()} for c in cams]


def site_config(tmp: Path, args: argparse.Namespace, clip: Path | None) -> tuple[Path, list[str]]:
    """tmp/site.yaml with every listening port free now; the camera ids in configuration order."""
    tcp = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("frontend", "backend", "events_in", "events_out")}
    cameras = camera_list(args.cameras, args.fps, clip)
    cfg = {"broker": {**tcp, "metrics_port": free_port()},
           "worker": {"metrics_port": 0},  # `up` gives each of several workers a free port
           "runtime": {"threads": 1},  # 2 shared cores: one ONNX thread per session
           "store": {"type": "local", "path": str(tmp / "store")},
           "up": {"workers": args.workers, "cameras": cameras, "dashboard": not args.no_dashboard},
           "dashboard": {"listen": f"127.0.0.1:{free_port()}"}}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, [c["id"] for c in cameras]


class EventTail:
    """The complete lines appended to the events JSONL file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


@dataclass
class Child:
    kind: str  # "up" or the `argusnet` subcommand
    name: str
    pid: int
    metrics_port: int | None


@dataclass
class Counters:
    """Deltas of Prometheus counters between scrapes, per process and series; a restart or reset counts from 0."""

    prev: dict[tuple, tuple[int, float]] = field(default_factory=dict)

    def deltas(self, child: Child, metrics: dict, names: Sequence[str]) -> Iterator[tuple[str, dict, float]]:
        for name in names:
            for labels, value in metrics.get(name, []):
                key = (child.name, name, tuple(sorted(labels.items())))
                pid, before = self.prev.get(key, (None, 0.0))
                self.prev[key] = (child.pid, value)
                yield name, labels, value - before if pid == child.pid and value >= before else value


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def per_min(count: float, seconds: float) -> float:
    return round(count * 60.0 / seconds, 1) if seconds > 0 else 0.0


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group ``pgid`` (zombies excluded)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d))
    return out


def _die_with_parent() -> None:
    """In `up` before it runs: SIGINT when this benchmark dies, however it dies (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))


class UpExited(RuntimeError):
    pass


class Soak:
    """One `argusnet up` site in ``tmp``, its samples and its events."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.clip = cut_clip(ARCADE, tmp / "arcade.avi") if ARCADE.is_file() else None
        self.config, self.camera_ids = site_config(tmp, args, self.clip)
        self.logs = tmp / "logs"
        self.tail = EventTail(tmp / "events.jsonl")
        self.counters = Counters()
        self.pids: dict[str, int] = {}
        self.restarts: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.events: list[tuple[float, str, float | None]] = []  # (t_s, camera, latency_ms of started/identified)
        self.up: subprocess.Popen | None = None
        self.t0 = self.t0_epoch = self.last = 0.0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
        with open(self.tmp / "up.log", "wb") as log:
            self.up = subprocess.Popen([sys.executable, "-m", "argusnet", "--config", str(self.config), "up",
                                        "--events-jsonl", str(self.tail.path), "--logs", str(self.logs)],
                                       cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True, preexec_fn=_die_with_parent)

    def log_tails(self) -> str:
        parts = []
        for path in [self.tmp / "up.log", *sorted(self.logs.glob("*.log"))]:
            if path.is_file():
                parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def check_up(self) -> None:
        if self.up is not None and self.up.poll() is not None:
            raise UpExited(f"`argusnet up` exited with code {self.up.returncode}\n{self.log_tails()}")

    def children(self) -> list[Child]:
        out = [Child("up", "up", self.up.pid, None)]
        for pid in children_of(self.up.pid):
            found = role(cmdline(pid), self.camera_ids)
            if found is not None:
                name = found[1] if all(c.name != found[1] for c in out) else f"{found[1]}-{pid}"
                out.append(Child(found[0], name, pid, found[2]))
        return out

    def wait_ready(self) -> list[str]:
        """Until every worker serves its metrics and every camera has had an event (or FIRST_EVENTS_TIMEOUT_S
        passed with at least one event); the cameras that had none by then."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self.check_up()
            workers = [c for c in self.children() if c.kind == "worker"]
            if len(workers) == self.args.workers and all(c.metrics_port and scrape(c.metrics_port) is not None
                                                         for c in workers):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers were not ready within {START_TIMEOUT_S:.0f} s\n{self.log_tails()}")
            time.sleep(1.0)
        seen: set[str] = set()
        deadline = time.monotonic() + FIRST_EVENTS_TIMEOUT_S
        while not seen >= set(self.camera_ids) and time.monotonic() < deadline:
            self.check_up()
            seen.update(str(e.get("camera")) for e in self.tail.read())
            time.sleep(1.0)
        if not seen:
            raise RuntimeError(f"no event within {FIRST_EVENTS_TIMEOUT_S:.0f} s of the workers being ready\n"
                               f"{self.log_tails()}")
        return sorted(set(self.camera_ids) - seen)

    def run(self) -> None:
        """Sample every --sample-s seconds for --minutes (a last sample at the end of a partial interval)."""
        total = self.args.minutes * 60.0
        due = sorted({min(total, k * self.args.sample_s) for k in range(1, math.ceil(total / self.args.sample_s) + 1)})
        self.tail.read()  # the warm-up's events are not part of the run
        self.t0, self.t0_epoch = time.monotonic(), time.time()
        self.last = self.t0
        kids = self.children()
        self.pids = {c.name: c.pid for c in kids}
        self.drops(kids)  # the counters' starting values
        for at in due:
            while (left := self.t0 + at - time.monotonic()) > 0:
                self.check_up()
                time.sleep(min(1.0, left))
            self.sample()

    def sample(self) -> None:
        now = time.monotonic()
        window, self.last = now - self.last, now
        t_s = round(now - self.t0, 1)
        kids = self.children()
        procs = {}
        for c in kids:
            if self.pids.get(c.name, c.pid) != c.pid:
                self.restarts.append({"process": c.name, "t_s": t_s, "old_pid": self.pids[c.name], "new_pid": c.pid})
                print(f"soak: {c.name} restarted (pid {self.pids[c.name]} -> {c.pid}) by t={t_s} s", file=sys.stderr)
            self.pids[c.name] = c.pid
            procs[c.name] = {"pid": c.pid, "rss_mb": rss_mb(c.pid), "fds": fd_count(c.pid)}
        latencies, counts = self.window_events()
        drops = self.drops(kids)
        self.samples.append({
            "t_s": t_s, "window_s": round(window, 1), "processes": procs,
            "missing": sorted(set(self.pids) - set(procs)),
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "latency_events": len(latencies),
            "events_per_min": {cam: per_min(n, window) for cam, n in counts.items()},
            "drops_per_min": per_min(drops["drops"], window),
            "drops_per_min_by_reason": {r: per_min(n, window) for r, n in sorted(drops["by_reason"].items())},
            "camera_drops_per_min": per_min(drops["camera"], window),
            "frames_processed_per_min": per_min(drops["frames_out"], window),
            "scrape_failed": drops["failed"]})
        rss = ", ".join(f"{n} {p['rss_mb']}" for n, p in procs.items())
        print(f"soak: t={t_s:.0f} s p95 {self.samples[-1]['p95_ms']} ms, drops/min "
              f"{self.samples[-1]['drops_per_min']}, RSS MB {rss}", file=sys.stderr, flush=True)

    def window_events(self) -> tuple[list[float], dict[str, int]]:
        """Latencies and events per camera of the lines written since the last sample (also kept in self.events)."""
        latencies: list[float] = []
        counts = {cam: 0 for cam in self.camera_ids}
        for e in self.tail.read():
            cam, lat = str(e.get("camera")), e.get("latency_ms")
            lat = float(lat) if e.get("type") in LATENCY_TYPES and isinstance(lat, (int, float)) else None
            if lat is not None:
                latencies.append(lat)
            counts[cam] = counts.get(cam, 0) + 1
            ts = e.get("ts")
            if isinstance(ts, (int, float)):
                self.events.append((float(ts) - self.t0_epoch, cam, lat))
        return latencies, counts

    def drops(self, kids: list[Child]) -> dict[str, Any]:
        """Counter deltas since the last call: broker + worker drops (and per reason), camera drops, frames out."""
        out: dict[str, Any] = {"drops": 0.0, "by_reason": defaultdict(float), "camera": 0.0, "frames_out": 0.0,
                               "failed": []}
        for c in kids:
            if c.metrics_port is None:
                continue
            metrics = scrape(c.metrics_port)
            if metrics is None:
                out["failed"].append(c.name)
                continue
            for name, labels, delta in self.counters.deltas(c, metrics, (DROPPED, FRAMES_OUT)):
                if name == FRAMES_OUT:
                    out["frames_out"] += delta if c.kind == "worker" else 0.0
                elif c.kind == "camera":
                    out["camera"] += delta
                elif c.kind in ("broker", "worker"):
                    out["drops"] += delta
                    out["by_reason"][labels.get("reason", "?")] += delta
        return out

    def stop(self) -> dict[str, Any]:
        """SIGINT to `up`; its process group killed if anything of it is still there after STOP_TIMEOUT_S."""
        info: dict[str, Any] = {"up_exit_code": None, "stop_s": None, "killed_after_timeout": []}
        if self.up is None:
            return info
        t = time.monotonic()
        try:
            if self.up.poll() is None:
                self.up.send_signal(signal.SIGINT)
            try:
                info["up_exit_code"] = self.up.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        finally:
            info["killed_after_timeout"] = self.kill_group()
        info["stop_s"] = round(time.monotonic() - t, 1)
        return info

    def kill_group(self) -> list[str]:
        """SIGKILL whatever of `up`'s process group is alive; their command lines."""
        left = group_members(self.up.pid)
        names = [" ".join(cmdline(pid)[2:6]) or str(pid) for pid in left]
        if left:
            os.killpg(self.up.pid, signal.SIGKILL)
        if self.up.poll() is None:
            self.up.wait()
        deadline = time.monotonic() + 10.0
        while group_members(self.up.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return names


# --- summary -----------------------------------------------------------------------------------------------------

def process_trends(samples: list[dict], warm: float) -> tuple[dict, dict, dict]:
    """Per process (its last PID only): RSS growth % from the first sample at >= warm to the last, the RSS
    figures, and its descriptors (first, at warm, last, max, flat)."""
    growth, rss, fds = {}, {}, {}
    names = sorted({n for s in samples for n in s["processes"]})
    for name in names:
        last_pid = next(s["processes"][name]["pid"] for s in reversed(samples) if name in s["processes"])
        series = [(s["t_s"], s["processes"][name]) for s in samples
                  if s["processes"].get(name, {}).get("pid") == last_pid
                  and s["processes"][name]["rss_mb"] is not None and s["processes"][name]["fds"] is not None]
        if not series:
            continue
        base = next((p for t, p in series if t >= warm), series[0][1])
        last = series[-1][1]
        growth[name] = round((last["rss_mb"] - base["rss_mb"]) / base["rss_mb"] * 100.0, 2)
        rss[name] = {"first": series[0][1]["rss_mb"], "at_baseline": base["rss_mb"], "last": last["rss_mb"],
                     "max": max(p["rss_mb"] for _, p in series)}
        fds[name] = {"flat": last["fds"] <= base["fds"] + FD_SLACK, "first": series[0][1]["fds"],
                     "at_baseline": base["fds"], "last": last["fds"], "max": max(p["fds"] for _, p in series)}
    return growth, rss, fds


def p95_drift(events: list[tuple[float, str, float | None]], end: float, warm: float) -> dict[str, Any]:
    windows = {"baseline": (warm, 2 * warm), "final": (end - warm, end + 1e-9)}
    out: dict[str, Any] = {}
    for key, (lo, hi) in windows.items():
        values = [lat for t, _cam, lat in events if lat is not None and lo <= t < hi]
        out[key] = {"from_s": round(lo, 1), "to_s": round(hi, 1), "events": len(values),
                    "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95)}
    base, final = out["baseline"]["p95_ms"], out["final"]["p95_ms"]
    out["drift_pct"] = None if not base or final is None else round((final - base) / base * 100.0, 1)
    return out


def minute_counts(events: list[tuple[float, str, float | None]], cameras: list[str], end: float) -> dict[str, list]:
    """Events per camera in each full minute of the run (one bucket of the whole run when it is shorter)."""
    minutes = int(end // 60) or 1
    width = 60.0 if end >= 60 else max(end, 1e-9)
    counts = {cam: [0] * minutes for cam in cameras}
    for t, cam, _lat in events:
        k = int(t // width) if t >= 0 else -1
        if cam in counts and 0 <= k < minutes:
            counts[cam][k] += 1
    return counts


def summarise(samples: list[dict], events: list, cameras: list[str], restarts: list) -> dict[str, Any]:
    end = samples[-1]["t_s"] if samples else 0.0
    warm = min(WARM_S, end / 3)
    growth, rss, fds = process_trends(samples, warm)
    drift = p95_drift(events, end, warm)
    minutes = minute_counts(events, cameras, end)
    every = bool(samples) and all(n >= 1 for per in minutes.values() for n in per)
    drops = [s["drops_per_min"] for s in samples if s["t_s"] >= warm]
    return {
        "run_s": end, "baseline_t_s": round(warm, 1),
        "rss_growth_after_5min_pct": growth, "rss_mb": rss, "fds_flat": fds,
        "p95_drift_pct": drift["drift_pct"], "p95_windows": drift,
        "every_camera_every_minute": every, "events_per_minute": minutes,
        "drops_per_min_mean_after_baseline": round(float(np.mean(drops)), 1) if drops else None,
        "restarts": restarts,
        "targets": {"rss_growth_le_5pct": bool(growth) and all(g <= RSS_TARGET_PCT for g in growth.values()),
                    "fds_flat": bool(fds) and all(f["flat"] for f in fds.values()),
                    "p95_drift_le_20pct": drift["drift_pct"] is not None and drift["drift_pct"] <= P95_TARGET_PCT,
                    "events_every_minute": every, "no_restarts": not restarts}}


def print_table(result: dict[str, Any]) -> None:
    from tabulate import tabulate

    s = result["summary"]
    rows = [[name, s["rss_mb"][name]["first"], s["rss_mb"][name]["at_baseline"], s["rss_mb"][name]["last"],
             growth, f["first"], f["at_baseline"], f["last"], f["max"], "yes" if f["flat"] else "NO"]
            for name, growth in s["rss_growth_after_5min_pct"].items() for f in [s["fds_flat"][name]]]
    print(f"\nsoak: {result['minutes']} min, {result['cameras']} cameras at {result['camera_fps']} fps, "
          f"{result['workers']} workers; baseline at t={s['baseline_t_s']} s; total {result['total_s']} s")
    print(tabulate(rows, headers=["process", "RSS MB first", "at base", "last", "growth %", "fds first", "at base",
                                  "last", "max", "flat"]))
    w = s["p95_windows"]
    print(f"p95 {w['baseline']['p95_ms']} ms [{w['baseline']['from_s']}, {w['baseline']['to_s']}) s -> "
          f"{w['final']['p95_ms']} ms [{w['final']['from_s']}, {w['final']['to_s']}] s: drift {s['p95_drift_pct']} %")
    low = {cam: min(per) for cam, per in s["events_per_minute"].items()}
    print(f"fewest events in a minute per camera: {low}; drops/min after baseline "
          f"{s['drops_per_min_mean_after_baseline']}; restarts {len(s['restarts'])}")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in s["targets"].items()))


# --- main --------------------------------------------------------------------------------------------------------

def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    soak = Soak(args, tmp)
    started = time.monotonic()
    result: dict[str, Any] = {"interrupted": False, "problem": None, "cameras_late_at_start": []}
    try:
        soak.start()
        result["cameras_late_at_start"] = soak.wait_ready()
        result["startup_s"] = round(time.monotonic() - started, 1)
        soak.run()
    except KeyboardInterrupt:
        result["interrupted"] = True
    except RuntimeError as exc:  # `up` exited, or never got ready: what was sampled so far is still reported
        result["problem"] = str(exc)
    finally:
        result["stop"] = soak.stop()
    sources = {c: ("demo" if c.startswith("demo") else f"{ARCADE.name} looped, {CLIP_SIDE[0]}x{CLIP_SIDE[1]} MJPG")
               for c in soak.camera_ids}
    return {"benchmark": "soak", "minutes": args.minutes, "cameras": args.cameras, "workers": args.workers,
            "camera_fps": args.fps, "camera_sources": sources, "sample_s": args.sample_s, **result,
            "total_s": round(time.monotonic() - started, 1), "samples": soak.samples,
            "summary": summarise(soak.samples, soak.events, soak.camera_ids, soak.restarts)}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to sample after events flow (default 30)")
    p.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples (default 30)")
    p.add_argument("--cameras", type=int, default=6, help="cameras (half demo, half arcade.mp4 when present)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frames per second per camera ({DEFAULT_FPS})")
    p.add_argument("--no-dashboard", action="store_true", help="run `up` without its dashboard")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                   help="keep the site (config, store, logs, events.jsonl) in DIR instead of a temporary directory")
    args = p.parse_args(argv)
    check_args(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            result = measure(args, args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="argusnet-soak-") as tmp:
                result = measure(args, Path(tmp))
    finally:
        signal.signal(signal.SIGTERM, previous)
    emit(result, args.json)
    print_table(result)
    if result["problem"] and not result["samples"]:
        print(f"soak: {result['problem']}", file=sys.stderr)
        return 1
    return 130 if result["interrupted"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
