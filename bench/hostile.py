"""Hostile camera benchmark: a real broker (in this process), a real worker (`argusnet worker`, the demo portrait
enrolled) and an honest camera node (`argusnet camera --source demo`), first quiet, then with a rogue node beside the
honest one for the same time. The rogue sends, round-robin at --rogue-rate messages/s: a JPEG "bomb" (a small file
that declares 16384x16384 pixels), a frame whose declared size is not its JPEG's, a frame dated a day ahead, a frame
sent as the honest camera's id, and a frame from a new camera id each time (a flood of ids).

Measured per phase: the honest camera's events (how many, the longest gap between two), their end-to-end latency
(capture -> event received, p50/p95), the worker's resident memory (max) and whether it stayed alive, and the
worker's drop counters by reason. Targets (issue 24): the worker alive, its RSS under the quiet run's + 200 MB, the
honest camera's events every few seconds throughout, p95 latency within 2x of the quiet run.

Run: argusnet bench hostile --json out/bench-hostile.json [--seconds 60]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import simplejpeg
import zmq
from prometheus_client import CollectorRegistry

from argusnet.launcher import free_port
from bench.common import emit, parser
from bench.overload import rss_mb, start_worker, wait_for_worker, worker_metrics
from broker.config import BrokerConfig
from broker.server import Broker
from camera_node.demo import render
from shared.keys import SecurityConfig
from shared.protocol import Frame, Heartbeat, ProtocolConfig, TrackEvent, decode, encode

REPO = Path(__file__).resolve().parents[1]
HONEST = "demo"
BOMB_SIDE = 16384


@dataclass
class Phase:
    """What one phase saw of the honest camera and the worker."""

    name: str
    start: float
    latencies_s: list[float] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    def summary(self, end: float) -> dict[str, Any]:
        times = [self.start, *self.event_times, end]
        lat = sorted(self.latencies_s)
        return {"seconds": round(end - self.start, 1), "honest_events": len(self.event_times),
                "longest_gap_s": round(max(b - a for a, b in zip(times, times[1:])), 2),
                "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
                "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
                "worker_rss_max_mb": round(max(self.rss_mb), 1) if self.rss_mb else None}


def bomb_jpeg() -> bytes:
    """A real baseline JPEG of 16384x16384 grey pixels: a few hundred kB on the wire, 805 MB decoded as BGR."""
    grey = np.full((BOMB_SIDE, BOMB_SIDE, 1), 128, np.uint8)
    return simplejpeg.encode_jpeg(grey, quality=50, colorspace="GRAY")


def rogue_messages(now: float, n: int, jpeg: bytes, bomb: bytes) -> list[Frame]:
    """The rogue's round: every kind of hostile frame once."""
    def frame(camera: str, data: bytes, width: int, height: int, ts: float) -> Frame:
        return Frame(camera_id=camera, seq=n, capture_ts=ts, send_ts=ts, width=width, height=height, jpeg=data)

    return [frame("rogue", bomb, BOMB_SIDE, BOMB_SIDE, now), frame("rogue", jpeg, 64, 48, now),
            frame("rogue", jpeg, 640, 480, now + 86400.0), frame(HONEST, jpeg, 640, 480, now),
            frame(f"flood-{n}", jpeg, 640, 480, now)]


def rogue_loop(endpoint: str, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Send the rogue's frames at ``rate`` messages/s until ``stop`` (no credits asked for: it is hostile)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"cam:rogue")
    sock.connect(endpoint)
    jpeg = simplejpeg.encode_jpeg(cv2.resize(render(3.0)[0], (640, 480)), quality=80)
    bomb = bomb_jpeg()
    n, next_at = 0, time.monotonic()
    while not stop.is_set():
        now = time.time()
        sock.send(encode(Heartbeat(sender="rogue", role="camera", seq=n, ts=now, credits=0, cameras=())), zmq.NOBLOCK)
        for message in rogue_messages(now, n, jpeg, bomb):
            sock.send(encode(message), zmq.NOBLOCK)
            sent[0] += 1
            next_at += 1.0 / rate
            stop.wait(max(0.0, next_at - time.monotonic()))
        while sock.poll(0):
            sock.recv()
        n += 1
    sock.close(0)


def events_loop(endpoint: str, stop: threading.Event, phases: list[Phase]) -> None:
    """Record the honest camera's events (receive time, capture -> receive latency) into the current phase."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    while not stop.is_set():
        if not sock.poll(200):
            continue
        parts = sock.recv_multipart()
        event = decode(parts[-1], 1 << 20)
        if isinstance(event, TrackEvent) and event.camera == HONEST and phases:
            now = time.time()
            phases[-1].event_times.append(now)
            phases[-1].latencies_s.append(now - event.capture_ts)
    sock.close(0)


def start_camera(frontend: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
    return subprocess.Popen([sys.executable, "-m", "argusnet", "camera", "--source", "demo", "--id", HONEST,
                             "--broker", frontend, "--fps", "10"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)


def watch(phase: Phase, worker: subprocess.Popen, seconds: float) -> float:
    """Sample the worker's RSS every second for ``seconds`` (or until it dies); the phase's end time."""
    end = time.time() + seconds
    while time.time() < end and worker.poll() is None:
        phase.rss_mb.append(rss_mb(worker.pid))
        time.sleep(1.0)
    return time.time()


def drops(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in worker_metrics(port).get("argusnet_frames_dropped_total", []):
        out[labels.get("reason", "?")] = out.get(labels.get("reason", "?"), 0.0) + value
    return out


def run(args: Any, broker: Broker, tmp: Path) -> dict[str, Any]:
    port = free_port()
    worker = start_worker(tmp, {"broker": {"backend": broker.endpoints["backend"],
                                           "events_in": broker.endpoints["events_in"]}}, port)
    camera = None
    stop, phases, sent = threading.Event(), [], [0]
    try:
        wait_for_worker(worker, port)
        threading.Thread(target=events_loop, args=(broker.endpoints["events_out"], stop, phases), daemon=True).start()
        camera = start_camera(broker.endpoints["frontend"])
        warm = Phase("warm-up", time.time())
        phases.append(warm)
        deadline = time.time() + 120
        while not warm.event_times and time.time() < deadline:
            time.sleep(0.5)
        quiet = Phase("quiet", time.time())
        phases.append(quiet)
        quiet_end = watch(quiet, worker, args.seconds)
        drops_quiet = drops(port)
        hostile = Phase("hostile", time.time())
        phases.append(hostile)
        threading.Thread(target=rogue_loop, args=(broker.endpoints["frontend"], args.rogue_rate, stop, sent),
                         daemon=True).start()
        hostile_end = watch(hostile, worker, args.seconds)
        alive = worker.poll() is None
        drops_hostile = drops(port) if alive else {}
    finally:
        stop.set()
        for proc in (camera, worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
    return result(args, quiet.summary(quiet_end), hostile.summary(hostile_end), alive, sent[0],
                  {"quiet": drops_quiet, "hostile": drops_hostile})


def result(args: Any, quiet: dict, hostile: dict, alive: bool, sent: int, dropped: dict) -> dict[str, Any]:
    ratio = (hostile["latency_p95_s"] / quiet["latency_p95_s"]
             if hostile["latency_p95_s"] and quiet["latency_p95_s"] else None)
    rss_growth = (hostile["worker_rss_max_mb"] - quiet["worker_rss_max_mb"]
                  if hostile["worker_rss_max_mb"] and quiet["worker_rss_max_mb"] else None)
    return {"benchmark": "hostile", "seconds_per_phase": args.seconds, "rogue_rate": args.rogue_rate,
            "rogue_messages_sent": sent, "worker_alive": alive, "quiet": quiet, "hostile": hostile,
            "worker_frames_dropped": dropped,
            "p95_latency_ratio_hostile_over_quiet": round(ratio, 2) if ratio else None,
            "worker_rss_growth_mb": round(rss_growth, 1) if rss_growth is not None else None,
            "targets": {"worker_alive": alive, "rss_growth_under_200_mb": rss_growth is not None and rss_growth < 200,
                        "p95_within_2x": ratio is not None and ratio <= 2.0,
                        "honest_events_every_few_s": hostile["longest_gap_s"] <= 10.0}}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of each phase (quiet, then hostile)")
    p.add_argument("--rogue-rate", type=float, default=20.0, help="rogue messages per second")
    args = p.parse_args(argv)
    bcfg = BrokerConfig(frontend="tcp://127.0.0.1:*", backend="tcp://127.0.0.1:*", events_in="tcp://127.0.0.1:*",
                        events_out="tcp://127.0.0.1:*")
    broker = Broker(bcfg, SecurityConfig(), ProtocolConfig(), CollectorRegistry())
    stop_broker = threading.Event()
    threading.Thread(target=broker.run, args=(stop_broker,), daemon=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="argusnet-hostile-") as tmp:
            out = run(args, broker, Path(tmp))
    finally:
        stop_broker.set()
        broker.close()
    emit(out, args.json)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
