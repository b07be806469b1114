"""Overload benchmark: 32 simulated cameras at 5 fps each (160 frames/s) through the real broker into one real
worker process that cannot keep up. Measured: the worker's and the broker's resident memory over time (should
stay flat), frames processed and dropped per camera (drops counted, shared fairly: no camera starved), and the
broker -> worker latency of processed frames (bounded: queues are bounded).

The cameras run in this process (one DEALER each, credit-driven like the node agent, a real 640x480 JPEG of the
demo scene); the broker runs in a thread of this process; the worker is `argusnet worker` with the default
tracked pipeline and a gallery holding the demo portrait.

Run: argusnet bench overload --json out/bench-overload.json [--seconds 60]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import simplejpeg
import yaml
import zmq
from prometheus_client import CollectorRegistry

from argusnet.launcher import free_port
from bench.common import emit, parser
from broker.config import BrokerConfig
from broker.server import Broker
from camera_node.demo import render
from shared.keys import SecurityConfig
from shared.protocol import Frame, Heartbeat, ProtocolConfig, decode, encode

REPO = Path(__file__).resolve().parents[1]
WORKER_START_S = 120.0  # model load, and the dlib ONNX export on a first run


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cameras_loop(endpoint: str, n: int, fps: float, stop: threading.Event, sent: list[int]) -> None:
    ctx = zmq.Context.instance()
    socks, credits = [], [0] * n
    for i in range(n):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, f"cam:c{i:02d}".encode())
        s.connect(endpoint)
        socks.append(s)
    jpegs = [simplejpeg.encode_jpeg(cv2.resize(render(t)[0], (640, 480)), quality=80) for t in np.arange(0, 12, 0.5)]
    seq, hb, next_at = [0] * n, 0, time.monotonic()
    while not stop.is_set():
        hb += 1
        for i, s in enumerate(socks):
            s.send(encode(Heartbeat(sender=f"c{i:02d}", role="camera", seq=hb, ts=time.time(), credits=0,
                                    cameras=())), zmq.NOBLOCK)
            while s.poll(0):
                credits[i] += decode(s.recv(), 1 << 20).credits
            if credits[i] > 0:
                now = time.time()
                s.send(encode(Frame(camera_id=f"c{i:02d}", seq=seq[i], capture_ts=now, send_ts=now, width=640,
                                    height=480, jpeg=jpegs[seq[i] % len(jpegs)])), zmq.NOBLOCK)
                credits[i] -= 1
                sent[i] += 1
            seq[i] += 1
        next_at += 1.0 / fps
        stop.wait(max(0.0, next_at - time.monotonic()))
    for s in socks:
        s.close(0)


def start_worker(tmp: Path, cfg: dict, port: int) -> subprocess.Popen:
    from argusnet.commands.demo import enrol_demo_person
    from argusnet.config import load_config
    from gpu_worker.engine import Engine

    enrol_demo_person(Engine(load_config()), tmp / "gallery").close()
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
    return subprocess.Popen([sys.executable, "-m", "argusnet", "--config", str(tmp / "cfg.yaml"), "worker", "--id",
                             "w1", "--gallery", str(tmp / "gallery"), "--metrics-port", str(port)], cwd=REPO, env=env,
                            stderr=subprocess.DEVNULL)


def worker_metrics(port: int) -> dict:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def percentile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float:
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("inf")


def wait_for_worker(worker: subprocess.Popen, port: int, timeout: float = WORKER_START_S) -> None:
    """Until the worker serves its metrics; an error if it exits or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            worker_metrics(port)
            return
        except OSError as exc:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode} before serving metrics") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker served no metrics on port {port} within {timeout:.0f} s") from exc
            time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=32)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    registry = CollectorRegistry()
    bcfg = BrokerConfig(frontend="tcp://127.0.0.1:*", backend="tcp://127.0.0.1:*", events_in="tcp://127.0.0.1:*",
                        events_out="tcp://127.0.0.1:*")
    broker = Broker(bcfg, SecurityConfig(), ProtocolConfig(), registry)
    stop_broker, stop_cams = threading.Event(), threading.Event()
    threading.Thread(target=broker.run, args=(stop_broker,), daemon=True).start()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="argusnet-overload-") as tmp:
        worker = start_worker(Path(tmp), {"broker": {"backend": broker.endpoints["backend"],
                                                     "events_in": broker.endpoints["events_in"]}}, port)
        try:
            wait_for_worker(worker, port)
            sent = [0] * args.cameras
            cams = threading.Thread(target=cameras_loop, args=(broker.endpoints["frontend"], args.cameras, args.fps,
                                                               stop_cams, sent), daemon=True)
            cams.start()
            memory = []
            start = time.monotonic()
            while time.monotonic() - start < args.seconds:
                time.sleep(5.0)
                memory.append({"t_s": round(time.monotonic() - start), "worker_mb": round(rss_mb(worker.pid), 1),
                               "bench_and_broker_mb": round(rss_mb(os.getpid()), 1)})
            stop_cams.set()
            cams.join()
            time.sleep(3.0)
            wm = worker_metrics(port)
        finally:
            worker.terminate()
            worker.wait(timeout=20)
            stop_broker.set()
            broker.close()
    processed = {lab["camera"]: v for lab, v in wm.get("argusnet_frames_out_total", [])}
    dropped = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "argusnet_frames_dropped_total":
                dropped[s.labels["camera"]] = dropped.get(s.labels["camera"], 0) + s.value
    latency = sorted((float(lab["le"]), v) for lab, v in wm.get("argusnet_stage_latency_seconds_bucket", [])
                     if lab.get("stage") == "broker")
    per_cam = [processed.get(f"c{i:02d}", 0) for i in range(args.cameras)]
    result = {"benchmark": "overload", "cameras": args.cameras, "fps_per_camera": args.fps, "seconds": args.seconds,
              "frames_sent": sum(sent), "frames_processed": int(sum(per_cam)),
              "frames_dropped_at_broker": int(sum(dropped.values())),
              "processed_per_camera": {"min": min(per_cam), "max": max(per_cam), "mean": round(float(np.mean(per_cam)), 1)},
              "fairness_min_over_max": round(min(per_cam) / max(1, max(per_cam)), 3),
              "dropped_per_camera": {"min": min(dropped.values(), default=0), "max": max(dropped.values(), default=0)},
              "broker_to_worker_latency_p50_s": percentile_from_buckets(latency, 0.5) if latency else None,
              "broker_to_worker_latency_p99_s": percentile_from_buckets(latency, 0.99) if latency else None,
              "memory": memory}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
