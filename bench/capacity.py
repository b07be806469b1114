"""Capacity benchmark: how many 720p cameras at 10 fps one worker process sustains, tracked vs per-frame.

Simulated cameras speak the real camera protocol (a DEALER each with routing id ``cam:ID``, camera heartbeats
every HEARTBEAT_INTERVAL_S, a Frame only while holding a broker credit, security as configured by default: no
CurveZMQ) from one thread of this process. Their frames are real JPEGs: the 105 frames of arcade.mp4 (else the demo
scene) scaled to 1280x720 and encoded once with the node's own encoder at its default quality 85; each camera
plays the clip at its own offset, in real time, and its frames are spread over the 100 ms period. They go through
a real `argusnet broker` process to ONE real `argusnet worker` process (default configuration, a gallery holding the
demo portrait).

The ramp adds cameras (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24 ... up to ``--max-cameras``); each step warms up for
``--warmup`` s and is measured over ``--step-seconds``. A step holds when
- p95 capture -> event <= 250 ms: over the track_started / track_identified events of the window, capture (the
  frame's capture_ts, set when it was sent) -> the event received here from the broker's event stream (the
  worker's end-to-end histogram, interpolated, when the window has fewer than MIN_EVENTS events), and
- drops <= 1 %: frames dropped by the broker and the worker (argusnet_frames_dropped_total, every reason) plus
  frames a camera could not send for want of a credit, over the frames the cameras meant to send.
The ramp stops at the first step that does not hold; ``cameras_sustained`` is the largest step that held. The
same ramp runs with ``tracking.processor: per_frame`` (its own broker and worker). Each ``--variant "K=V ..."``
runs one more tracked ramp in the same run with those settings on top (e.g. ``--variant "worker.detect_threads=1
worker.capacity=4"``, the worker of before, or ``--variant "tracking.distant.fine_every_s=0
tracking.distant.regions=0"``, without the distant-face passes), reported under ``variants`` with its ratio to
the tracked ramp. Every configuration's broker and worker run from the start, and the ramps advance in turns (one
step of each per round, the others' cameras quiet): the host's other load changes in time, and so each
configuration meets it alike.

Before the ramps, ``ceiling`` (bench/ceiling.py) measures what decoding and detecting one of these frames cost on
this host's cores and the cameras those two steps alone would fill them with (``cameras_max``): no ramp sustains
more, so a target above it is out of this host's reach at every frame detected.

Target (issue 14): cameras_sustained >= 8 at the default tracking.detect_fps, and >= 1.5 x the per-frame figure.

Run: argusnet bench capacity --json out/bench-capacity.json
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import zmq

from bench.camera import frames_720p
from bench.ceiling import ceiling
from bench.common import emit, parser
from bench.link import (
    EventTap,
    Procs,
    buckets,
    deep_merge,
    enrolled_gallery,
    histogram_quantile,
    percentiles_ms,
    scrape,
    start_core,
    total,
    write_config,
)
from camera_node.node import encode_jpeg
from shared import metrics as m
from shared.errors import InputError, ProtocolError
from shared.protocol import Frame, Heartbeat, ProtocolConfig, decode_as, encode
from shared.zmq_defaults import HEARTBEAT_INTERVAL_S, configure

STEPS = (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32)
P95_MAX_MS = 250.0
DROP_MAX = 0.01
MIN_EVENTS = 5
JPEG_QUALITY = 85  # camera_node.config.CameraConfig.jpeg_quality's default
CLIP_FPS = 25.0
TARGETS = {"cameras_sustained_min": 8, "ratio_to_per_frame_min": 1.5}


def clip_jpegs() -> tuple[list[bytes], str]:
    frames, what = frames_720p(105)
    return [encode_jpeg(f, JPEG_QUALITY) for f in frames], what


@dataclass
class SimCamera:
    id: str
    index: int
    sock: zmq.Socket
    start: float
    next_frame: float
    next_beat: float
    credits: int = 0
    seq: int = 0
    beats: int = 0
    sent: int = 0
    no_credit: int = 0


class Senders:
    """Simulated camera nodes, all driven by one thread that owns their sockets; ``add(n)`` grows (or shrinks)
    them to n."""

    def __init__(self, endpoint: str, jpegs: list[bytes], fps: float) -> None:
        self.endpoint, self.jpegs, self.period = endpoint, jpegs, 1.0 / fps
        self.max_bytes = ProtocolConfig().max_message_bytes
        self.cams: list[SimCamera] = []
        self.wanted = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-cameras", daemon=True)
        self._thread.start()

    def add(self, n: int) -> None:
        with self.lock:
            self.wanted = n

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"sent": sum(c.sent for c in self.cams), "no_credit": sum(c.no_credit for c in self.cams),
                    "cameras": len(self.cams)}

    def ids(self) -> set[str]:
        with self.lock:
            return {c.id for c in self.cams}

    def _grow(self, poller: zmq.Poller) -> None:
        with self.lock:
            wanted = self.wanted
        while len(self.cams) > wanted:
            with self.lock:
                cam = self.cams.pop()
            poller.unregister(cam.sock)
            cam.sock.close(0)
        while len(self.cams) < wanted:
            i = len(self.cams)
            sock = configure(zmq.Context.instance().socket(zmq.DEALER))
            sock.setsockopt(zmq.ROUTING_ID, f"cam:sim{i:02d}".encode())
            sock.connect(self.endpoint)
            poller.register(sock, zmq.POLLIN)
            now = time.monotonic()
            cam = SimCamera(f"sim{i:02d}", i, sock, now, now + (i * 0.618034 % 1.0) * self.period, now)
            with self.lock:
                self.cams.append(cam)

    def _frame(self, cam: SimCamera, now: float) -> None:
        if cam.credits <= 0:
            cam.no_credit += 1
            return
        index = int(((now - cam.start) + cam.index * 0.7) * CLIP_FPS) % len(self.jpegs)
        wall = time.time()
        frame = Frame(camera_id=cam.id, seq=cam.seq, capture_ts=wall, send_ts=wall, width=1280, height=720,
                      jpeg=self.jpegs[index])
        try:
            cam.sock.send(encode(frame), zmq.NOBLOCK)
            cam.credits -= 1
            cam.sent += 1
        except zmq.Again:
            cam.no_credit += 1

    def _beat(self, cam: SimCamera) -> None:
        cam.beats += 1
        try:
            cam.sock.send(encode(Heartbeat(sender=cam.id, role="camera", seq=cam.beats, ts=time.time(), credits=0,
                                           cameras=())), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _receive(self, poller: zmq.Poller, timeout_s: float, by_sock: dict) -> None:
        for sock, _ in poller.poll(max(0.0, timeout_s) * 1000.0):
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    by_sock[sock].credits += decode_as(Heartbeat, data, self.max_bytes).credits
                except ProtocolError:
                    continue

    def _run(self) -> None:
        poller = zmq.Poller()
        while not self._stop.is_set():
            self._grow(poller)
            now = time.monotonic()
            with self.lock:
                cams = list(self.cams)
                for cam in cams:
                    if now >= cam.next_beat:
                        self._beat(cam)
                        cam.next_beat = now + HEARTBEAT_INTERVAL_S
                    if now >= cam.next_frame:
                        self._frame(cam, now)
                        cam.next_frame = max(cam.next_frame + self.period, now)
            if not cams:  # zmq's poll returns at once with no socket to watch
                self._stop.wait(0.05)
                continue
            due = min(min(c.next_frame, c.next_beat) for c in cams)
            self._receive(poller, min(due - time.monotonic(), 0.05), {c.sock: c for c in cams})
        for cam in self.cams:
            cam.sock.close(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Ramp:
    procs: Procs
    worker: str
    ports: dict[str, int]
    tap: EventTap
    senders: Senders
    warmup_s: float
    step_s: float

    def snapshot(self) -> dict:
        pids = {"worker": self.procs.procs[self.worker].pid, "broker": self.procs.procs["broker"].pid,
                "bench": os.getpid()}
        return {"worker": scrape(self.ports["worker_metrics"]), "broker": scrape(self.ports["broker_metrics"]),
                "senders": self.senders.counts(), "cpu": {k: cpu_seconds(p) for k, p in pids.items()},
                "t": time.time()}

    def step(self, n: int) -> dict:
        self.senders.add(n)
        time.sleep(self.warmup_s)
        before = self.snapshot()
        time.sleep(self.step_s)
        after = self.snapshot()
        cameras = self.senders.ids()
        return step_row(n, before, after, self.tap.latencies(lambda c: c in cameras, before["t"], after["t"]))


def stage_ms(before: dict, after: dict, frames: float) -> dict[str, float]:
    """Time the worker spent per processed frame in each of its stages (histogram sums over the window)."""
    out = {}
    for stage in ("decode", "detect", "track", "embed", "search", "publish"):
        spent = total(after, m.STAGE_LATENCY + "_sum", stage=stage) - total(before, m.STAGE_LATENCY + "_sum",
                                                                           stage=stage)
        out[stage] = round(spent * 1000.0 / max(frames, 1.0), 2)
    return out


def step_row(n: int, before: dict, after: dict, latencies: list[float]) -> dict:
    seconds = after["t"] - before["t"]

    def delta(side: str, name: str) -> float:
        return total(after[side], name) - total(before[side], name)

    sent = after["senders"]["sent"] - before["senders"]["sent"]
    no_credit = after["senders"]["no_credit"] - before["senders"]["no_credit"]
    broker_drops, worker_drops = delta("broker", m.FRAMES_DROPPED), delta("worker", m.FRAMES_DROPPED)
    drops = broker_drops + worker_drops + no_credit
    p50, p95 = percentiles_ms(latencies)
    hist = [buckets(s["worker"], m.END_TO_END_LATENCY) for s in (before, after)]
    hist_p95 = histogram_quantile(*hist, 0.95)
    hist_p95_ms = None if hist_p95 is None else round(hist_p95 * 1000.0, 1)
    use_events = len(latencies) >= MIN_EVENTS
    p95_used = p95 if use_events else hist_p95_ms
    drop_rate = drops / max(1, sent + no_credit)
    processed = delta("worker", m.FRAMES_OUT)
    return {
        "cameras": n, "seconds": round(seconds, 1),
        "fps_per_camera": round(processed / n / seconds, 2),
        "offered_fps_per_camera": round((sent + no_credit) / n / seconds, 2),
        "p50_latency_ms": p50, "p95_latency_ms": p95_used, "latency_source": "events" if use_events else
        "worker end-to-end histogram", "latency_events": len(latencies), "p95_latency_ms_histogram": hist_p95_ms,
        "drop_rate": round(drop_rate, 4),
        "dropped": {"broker": int(broker_drops), "worker": int(worker_drops), "no_credit": int(no_credit)},
        "stage_ms_per_frame": stage_ms(before["worker"], after["worker"], processed),
        "cpu_cores": {k: round((after["cpu"][k] - before["cpu"][k]) / seconds, 2) for k in after["cpu"]},
        "ok": p95_used is not None and p95_used <= P95_MAX_MS and drop_rate <= DROP_MAX,
    }


@dataclass
class RampState:
    """One configuration's ramp: the steps measured so far and what they show. Steps go up STEPS to the first that
    does not hold, then bisect between the last that held and that one (so 2 -> 4 failing also measures 3)."""

    label: str
    processor: str
    ramp: Ramp
    max_cameras: int
    steps: list[dict] = field(default_factory=list)
    held: int = 0
    failed: int | None = None

    def next_cameras(self) -> int | None:
        """The next step's camera count; None when the ramp is over."""
        if self.failed is None:
            measured = max((s["cameras"] for s in self.steps), default=0)
            return next((n for n in STEPS if measured < n <= self.max_cameras), None)
        if self.held and self.failed - self.held > 1:
            return (self.held + self.failed) // 2
        return None

    def measure(self, n: int) -> None:
        self.steps.append({**self.ramp.step(n), "refine": self.failed is not None})
        self.ramp.senders.add(0)  # quiet while the other configurations measure
        print(json.dumps({"processor": self.label, **self.steps[-1]}), file=sys.stderr, flush=True)
        if self.steps[-1]["ok"]:
            self.held = max(self.held, n)
        else:
            self.failed = n if self.failed is None else min(self.failed, n)

    def result(self) -> dict:
        held = [s for s in self.steps if s["ok"]]
        best = max(held, key=lambda s: s["cameras"]) if held else None
        return {"processor": self.processor, "sustained": best["cameras"] if best else 0, "at_sustained": best,
                "steps": self.steps}


def start_config(stack: ExitStack, label: str, processor: str, overrides: dict, tmp: Path, gallery: Path,
                 jpegs: list[bytes], args) -> RampState:
    """Broker + worker (tracking.processor = ``processor``) and their simulated cameras, none sending yet."""
    folder = tmp / label
    folder.mkdir()
    shutil.copytree(gallery, folder / "gallery")
    config = folder / "argusnet.yaml"
    ports = write_config(config, "127.0.0.1", deep_merge(overrides, {"tracking": {"processor": processor}}))
    worker = f"w-{label.replace('_', '-')}"
    procs = stack.enter_context(Procs(folder))
    start_core(procs, config, ports, folder / "gallery", worker)
    tap = EventTap(f"tcp://127.0.0.1:{ports['events_out']}")
    stack.callback(tap.close)
    senders = Senders(f"tcp://127.0.0.1:{ports['frontend']}", jpegs, args.fps)
    stack.callback(senders.close)
    return RampState(label, processor, Ramp(procs, worker, ports, tap, senders, args.warmup, args.step_seconds),
                     args.max_cameras)


def run_ramps(configs: list[tuple[str, str, dict]], tmp: Path, gallery: Path, jpegs: list[bytes], args) -> dict:
    """Every configuration (label, processor, overrides) gets its own broker and worker, all started first; then
    the ramps advance in turns, one step of each configuration per round, the others quiet meanwhile: what else
    runs on the host changes in time, and this way each configuration meets it alike."""
    with ExitStack() as stack:
        states = [start_config(stack, label, processor, overrides, tmp, gallery, jpegs, args)
                  for label, processor, overrides in configs]
        while True:
            due = [(state, n) for state in states if (n := state.next_cameras()) is not None]
            if not due:
                break
            for state, n in due:
                state.measure(n)
        return {state.label: state.result() for state in states}


def overrides_from(pairs: Sequence[str], base: dict | None = None) -> dict:
    """--set SECTION.KEY=VALUE pairs as a nested mapping (over ``base``), validated as the site configuration
    would be; tracking.processor is what the ramps vary, so it is refused."""
    from argusnet.config import parse_overrides

    if any(pair.partition("=")[0] == "tracking.processor" for pair in pairs):
        raise InputError("--set tracking.processor: that is what the ramps vary")
    return parse_overrides(pairs, base)


def _check_args(args) -> None:
    for name, low, high in (("step_seconds", 5, 300), ("warmup", 0, 60), ("fps", 1, 30), ("max_cameras", 1, 32)):
        value = getattr(args, name)
        if not low <= value <= high:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be between {low} and {high}")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--step-seconds", type=float, default=20.0, help="measured window per step")
    p.add_argument("--warmup", type=float, default=4.0, help="seconds after adding cameras before the window")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of every simulated camera")
    p.add_argument("--max-cameras", type=int, default=24, help="the ramp's last step at most")
    p.add_argument("--only", choices=["tracked", "per_frame"], default=None, help="run one of the two ramps")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="what-if: a site configuration value for the worker (e.g. runtime.threads=1)")
    p.add_argument("--variant", action="append", default=[], metavar='"SECTION.KEY=VALUE ..."',
                   help="one more tracked ramp in the same run with these values on top of --set")
    args = p.parse_args(argv)
    _check_args(args)
    from argusnet.config import load_config

    overrides = overrides_from(args.set)
    variants = [overrides_from(text.split(), overrides) for text in args.variant]
    detect_fps = load_config(environ={}, overrides=overrides).tracking.detect_fps
    jpegs, source = clip_jpegs()
    host_ceiling = ceiling(jpegs, overrides, args.fps)
    with tempfile.TemporaryDirectory(prefix="argusnet-capacity-") as tmp_name:
        tmp = Path(tmp_name)
        gallery = enrolled_gallery(tmp / "gallery")
        configs = [(name, name, overrides) for name in ("tracked", "per_frame") if args.only in (None, name)]
        configs += [(f"variant-{k}", "tracked", settings) for k, settings in enumerate(variants)]
        ramps = run_ramps(configs, tmp, gallery, jpegs, args)
    extra = [dict(ramps.pop(f"variant-{k}"), settings=settings, pairs=text)
             for k, (settings, text) in enumerate(zip(variants, args.variant))]
    result = {"benchmark": "capacity", "source": source, "frame": "1280x720 JPEG q85",
              "mean_jpeg_kb": round(sum(map(len, jpegs)) / len(jpegs) / 1024, 1), "fps_requested": args.fps,
              "detect_fps": detect_fps, "settings": overrides or "defaults",
              "criteria": {"p95_latency_ms_max": P95_MAX_MS, "drop_rate_max": DROP_MAX}, **headline(ramps),
              "ceiling": host_ceiling,
              "variants": [variant_row(v, ramps.get("tracked")) for v in extra],
              "steps": {k: v["steps"] for k, v in ramps.items()}}
    emit(result, args.json)
    return 0


def variant_row(ramp: dict, tracked: dict | None) -> dict:
    """A variant's figures beside the tracked ramp of the same run."""
    at = ramp.get("at_sustained") or {}
    ratio = None
    if tracked and tracked["sustained"]:
        ratio = round(ramp["sustained"] / tracked["sustained"], 2)
    return {"variant": ramp["pairs"], "settings": ramp["settings"], "cameras_sustained": ramp["sustained"],
            "ratio_to_tracked": ratio, "fps_per_camera": at.get("fps_per_camera"),
            "p95_latency_ms": at.get("p95_latency_ms"), "drop_rate": at.get("drop_rate"), "steps": ramp["steps"]}


def headline(ramps: dict) -> dict:
    """The figures the issue asks for, and the targets."""
    tracked, per_frame = ramps.get("tracked"), ramps.get("per_frame")
    at = (tracked or {}).get("at_sustained") or {}
    ratio = None
    if tracked and per_frame and per_frame["sustained"]:
        ratio = round(tracked["sustained"] / per_frame["sustained"], 2)
    met = None
    if tracked and per_frame:
        met = tracked["sustained"] >= TARGETS["cameras_sustained_min"] and (
            ratio is None or ratio >= TARGETS["ratio_to_per_frame_min"])
    return {"cameras_sustained": tracked and tracked["sustained"],
            "cameras_sustained_per_frame": per_frame and per_frame["sustained"],
            "fps_per_camera": at.get("fps_per_camera"), "p95_latency_ms": at.get("p95_latency_ms"),
            "drop_rate": at.get("drop_rate"), "ratio_to_per_frame": ratio, "targets": {**TARGETS, "met": met}}


if __name__ == "__main__":
    raise SystemExit(main())
