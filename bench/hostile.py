"""Hostile camera benchmark: a real site with CurveZMQ on (as the shipped deployments run it): `argusnet broker`,
`argusnet worker` (the demo portrait enrolled) and an honest camera node (`argusnet camera --source demo`), first
quiet, then with a rogue node beside it for the same time. The rogue holds an allow-listed camera key (a stolen or
compromised node) and sends, round-robin at --rogue-rate messages/s: a JPEG "bomb" (a real 16384x16384 JPEG, a few
hundred kB that decode to 805 MB), a frame whose declared size is not its JPEG's, a frame dated a day ahead, a frame
sent as the honest camera's id, and a frame from a new camera id each time (a flood of ids).

Measured per phase: the honest camera's events (how many, the longest gap between two), the end-to-end latency of
its track_started and track_identified events (capture -> event received here, p50/p95), the worker's resident
memory (max) and whether it stayed alive; and what the broker refused and the worker dropped, by reason. Targets
(issue 24): the worker alive, its RSS under the quiet run's + 200 MB, the honest camera's events every few seconds
throughout, p95 latency within 2x of the quiet run.

Run: argusnet bench hostile --json out/bench-hostile.json [--seconds 60]
"""

from __future__ import annotations

import os
import shutil
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
import yaml
import zmq

from argusnet.launcher import free_port
from bench.common import emit, parser
from bench.overload import rss_mb, worker_metrics
from camera_node.demo import render
from shared.keys import KeyFiles, generate_keys, load_public_key, load_secret_key
from shared.protocol import Frame, Heartbeat, TrackEvent, decode, encode

REPO = Path(__file__).resolve().parents[1]
HONEST, ROGUE = "demo", "rogue"
BOMB_SIDE = 16384
START_S = 180.0  # model load (and the dlib ONNX export on a first run), the first walk named


@dataclass
class Phase:
    """What one phase saw of the honest camera and the worker."""

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
                "latency_samples": len(lat),
                "worker_rss_max_mb": round(max(self.rss_mb), 1) if self.rss_mb else None}


class Site:
    """Keys, configuration and processes of the benchmark's site, all under ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys: dict[str, KeyFiles] = {n: generate_keys(n, tmp / "keys")
                                          for n in ("broker", HONEST, ROGUE, "w1", "bench")}
        for folder, names in (("cameras", (HONEST, ROGUE)), ("workers", ("w1",)), ("subscribers", ("bench",))):
            (tmp / folder).mkdir()
            for name in names:
                shutil.copy(self.keys[name].public, tmp / folder / f"{name}.key")
        self.ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "broker", "w1")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.config = tmp / "site.yaml"
        self.config.write_text(yaml.safe_dump(self._config()))

    def endpoint(self, name: str) -> str:
        return f"tcp://127.0.0.1:{self.ports[name]}"

    def _config(self) -> dict[str, Any]:
        k = self.keys
        return {"broker": {name: self.endpoint(name) for name in ("frontend", "backend", "events_in", "events_out")}
                | {"metrics_port": self.ports["broker"]},
                "security": {"curve": True, "broker_secret_key": str(k["broker"].secret),
                             "broker_public_key": str(k["broker"].public),
                             "allowed_keys_dir": str(self.tmp / "cameras"),
                             "worker_keys_dir": str(self.tmp / "workers"),
                             "subscriber_keys_dir": str(self.tmp / "subscribers"),
                             "camera_secret_key": str(k[HONEST].secret), "worker_secret_key": str(k["w1"].secret)},
                "store": {"type": "local", "path": str(self.tmp / "gallery")}}

    def start(self, name: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
        log = open(self.tmp / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "argusnet", "--config", str(self.config), *args],
                                            cwd=REPO, env=env, stdout=log, stderr=log)

    def curve_socket(self, kind: int, key: str) -> zmq.Socket:
        sock = zmq.Context.instance().socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        pair = load_secret_key(self.keys[key].secret)
        sock.curve_publickey, sock.curve_secretkey = pair.public, pair.secret
        sock.curve_serverkey = load_public_key(self.keys["broker"].public)
        return sock

    def metric(self, name: str, family: str) -> dict[str, float]:
        """A counter family of ``name``'s metrics by reason (and camera, where it has one: ``camera/reason``),
        the series that counted nothing left out."""
        out: dict[str, float] = {}
        for labels, value in worker_metrics(self.ports[name]).get(family, []):
            key = "/".join(labels[k] for k in ("camera", "reason") if k in labels)
            if value:
                out[key] = out.get(key, 0.0) + value
        return out

    def log_tail(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def bomb_jpeg() -> bytes:
    """A real baseline JPEG of 16384x16384 grey pixels: a few hundred kB on the wire, 805 MB decoded as BGR."""
    grey = np.full((BOMB_SIDE, BOMB_SIDE, 1), 128, np.uint8)
    return simplejpeg.encode_jpeg(grey, quality=50, colorspace="GRAY")


def rogue_messages(now: float, n: int, jpeg: bytes, bomb: bytes) -> list[Frame]:
    """The rogue's round: every kind of hostile frame once."""
    def frame(camera: str, data: bytes, width: int, height: int, ts: float) -> Frame:
        return Frame(camera_id=camera, seq=n, capture_ts=ts, send_ts=ts, width=width, height=height, jpeg=data)

    return [frame(ROGUE, bomb, BOMB_SIDE, BOMB_SIDE, now), frame(ROGUE, jpeg, 64, 48, now),
            frame(ROGUE, jpeg, 640, 480, now + 86400.0), frame(HONEST, jpeg, 640, 480, now),
            frame(f"flood-{n}", jpeg, 640, 480, now)]


def rogue_loop(site: Site, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Send the rogue's frames at ``rate`` messages/s until ``stop`` (it takes no notice of credits)."""
    sock = site.curve_socket(zmq.DEALER, ROGUE)
    sock.setsockopt(zmq.ROUTING_ID, f"cam:{ROGUE}".encode())
    sock.setsockopt(zmq.SNDHWM, 100)
    sock.connect(site.endpoint("frontend"))
    jpeg = simplejpeg.encode_jpeg(cv2.resize(render(3.0)[0], (640, 480)), quality=80)
    bomb = bomb_jpeg()
    n, next_at = 0, time.monotonic()
    while not stop.is_set():
        now = time.time()
        hb = Heartbeat(sender=ROGUE, role="camera", seq=n, ts=now, credits=0, cameras=())
        for message in (hb, *rogue_messages(now, n, jpeg, bomb)):
            try:
                sock.send(encode(message), zmq.NOBLOCK)
                sent[0] += isinstance(message, Frame)
            except zmq.Again:
                pass  # not connected yet, or the broker is not reading: a rogue does not wait
            next_at += 1.0 / rate
            stop.wait(max(0.0, next_at - time.monotonic()))
        while sock.poll(0):
            sock.recv()
        n += 1
    sock.close(0)


def events_loop(site: Site, stop: threading.Event, phases: list[Phase]) -> None:
    """Record the honest camera's events (receive time; capture -> receive latency of starts and names) into the
    current phase."""
    sock = site.curve_socket(zmq.SUB, "bench")
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(site.endpoint("events_out"))
    while not stop.is_set():
        if not sock.poll(200):
            continue
        event = decode(sock.recv_multipart()[-1], 1 << 20)
        if isinstance(event, TrackEvent) and event.camera == HONEST and phases:
            now = time.time()
            phases[-1].event_times.append(now)
            if event.type != "track_ended":  # an end is published once the track was lost for a while, by design
                phases[-1].latencies_s.append(now - event.capture_ts)
    sock.close(0)


def watch(phase: Phase, worker: subprocess.Popen, seconds: float) -> float:
    """Sample the worker's RSS every second for ``seconds`` (or until it dies); the phase's end time."""
    end = time.time() + seconds
    while time.time() < end and worker.poll() is None:
        phase.rss_mb.append(rss_mb(worker.pid))
        time.sleep(1.0)
    return time.time()


def start_site(site: Site) -> None:
    """Enrol the demo portrait, start broker, worker and the honest camera; return once the camera has an event."""
    from argusnet.commands.demo import enrol_demo_person
    from argusnet.config import load_config
    from gpu_worker.engine import Engine
    from store.config import LocalStoreConfig

    enrol_demo_person(Engine(load_config(environ={})), LocalStoreConfig(path=site.tmp / "gallery")).close()
    site.start("broker", "broker")
    site.start("w1", "worker", "--id", "w1", "--metrics-port", str(site.ports["w1"]))
    site.start(HONEST, "camera", "--id", HONEST, "--source", "demo", "--fps", "10", "--broker",
               site.endpoint("frontend"))


def wait_for_event(site: Site, phase: Phase) -> None:
    deadline = time.time() + START_S
    while not phase.event_times:
        if time.time() > deadline or any(p.poll() is not None for p in site.procs.values()):
            raise RuntimeError("no event of the honest camera within %.0f s:\n%s" % (
                START_S, "\n".join(f"--- {n}:\n{site.log_tail(n)}" for n in site.procs)))
        time.sleep(0.5)


def run(args: Any, site: Site) -> dict[str, Any]:
    stop, phases, sent = threading.Event(), [Phase(time.time())], [0]
    try:
        start_site(site)
        threading.Thread(target=events_loop, args=(site, stop, phases), daemon=True).start()
        wait_for_event(site, phases[0])
        worker = site.procs["w1"]
        quiet = Phase(time.time())
        phases.append(quiet)
        quiet_end = watch(quiet, worker, args.seconds)
        before = {"worker_dropped": site.metric("w1", "argusnet_frames_dropped_total"),
                  "broker_refused": site.metric("broker", "argusnet_auth_refused_total")}
        hostile = Phase(time.time())
        phases.append(hostile)
        threading.Thread(target=rogue_loop, args=(site, args.rogue_rate, stop, sent), daemon=True).start()
        hostile_end = watch(hostile, worker, args.seconds)
        alive = worker.poll() is None
        after = {"worker_dropped": site.metric("w1", "argusnet_frames_dropped_total") if alive else {},
                 "broker_refused": site.metric("broker", "argusnet_auth_refused_total")}
    finally:
        stop.set()
        site.close()
    return result(args, quiet.summary(quiet_end), hostile.summary(hostile_end), alive, sent[0],
                  {"quiet": before, "hostile": after})


def result(args: Any, quiet: dict, hostile: dict, alive: bool, sent: int, counters: dict) -> dict[str, Any]:
    ratio = (hostile["latency_p95_s"] / quiet["latency_p95_s"]
             if hostile["latency_p95_s"] and quiet["latency_p95_s"] else None)
    rss_growth = (hostile["worker_rss_max_mb"] - quiet["worker_rss_max_mb"]
                  if hostile["worker_rss_max_mb"] and quiet["worker_rss_max_mb"] else None)
    return {"benchmark": "hostile", "seconds_per_phase": args.seconds, "rogue_rate": args.rogue_rate,
            "rogue_frames_sent": sent, "worker_alive": alive, "quiet": quiet, "hostile": hostile,
            "counters_at_phase_end": counters,
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
    with tempfile.TemporaryDirectory(prefix="argusnet-hostile-") as tmp:
        out = run(args, Site(Path(tmp)))
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
