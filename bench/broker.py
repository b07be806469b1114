"""Broker benchmark: forwarding throughput and added latency of 100 KB frames, camera -> broker -> worker, on
loopback.

The broker runs in this process (a thread); the camera and the worker are separate processes speaking the real
protocol (credits, heartbeats). Each repeat measures:

- throughput: the camera sends ``--messages`` frames as fast as its credits allow; messages/s at the worker;
- latency: the camera sends at ``--rate`` messages/s for ``--seconds``; latency = time the worker received a frame
  minus the ``send_ts`` the camera stamped on it, once straight camera -> worker (DEALER -> ROUTER, the baseline)
  and once through the broker. The broker's added latency is the difference of the two percentiles.

Run: .venv/bin/python -m bench.broker --json out/bench-broker.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zmq
from prometheus_client import CollectorRegistry

from broker.config import BrokerConfig
from broker.server import Broker
from shared.keys import SecurityConfig
from shared.protocol import Frame, Heartbeat, ProtocolConfig, decode, encode
from shared.zmq_defaults import HEARTBEAT_INTERVAL_S, configure

ANY = "tcp://127.0.0.1:*"
MAX_BYTES = 8 * 1024 * 1024
PEER_TIMEOUT_S = 120.0


# ------------------------------------------------------------------------------------------------ peers
def _heartbeat(name: str, role: str, seq: int, credits: int, cameras: tuple[str, ...] = ()) -> bytes:
    return encode(Heartbeat(name, role, seq, time.time(), credits, cameras))


def _frame(seq: int, size: int) -> bytes:
    now = time.time()
    return encode(Frame("bench", seq, now, now, 640, 480, b"\xff" * size))


class _CameraLink:
    """The camera's DEALER and its credit count (no credits used when talking straight to a worker)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, via_broker: bool) -> None:
        self.sock = configure(ctx.socket(zmq.DEALER))
        self.sock.setsockopt(zmq.ROUTING_ID, b"cam:bench")
        self.sock.connect(endpoint)
        self.via_broker = via_broker
        self.credits = 0
        self.seq = 0
        self.next_beat = 0.0

    def service(self, wait_ms: int = 0) -> None:
        """Read broker heartbeats (credits) and send our own when due."""
        if not self.via_broker:
            return
        if time.monotonic() >= self.next_beat:
            self.seq += 1
            self.sock.send(_heartbeat("bench", "camera", self.seq, 0, ("bench",)))
            self.next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
        while self.sock.poll(wait_ms):
            msg = decode(self.sock.recv(), MAX_BYTES)
            if isinstance(msg, Heartbeat):
                self.credits += msg.credits
            wait_ms = 0

    def take_credit(self) -> None:
        """Wait for a credit (broker) and use it."""
        if not self.via_broker:
            return
        deadline = time.monotonic() + PEER_TIMEOUT_S
        while self.credits <= 0:
            if time.monotonic() > deadline:
                raise TimeoutError("camera: no credit from the broker")
            self.service(wait_ms=5)
        self.credits -= 1


def camera_process(endpoint: str, via_broker: bool, count: int, size: int, rate: float | None, done: Any) -> None:
    """Send ``count`` frames: as fast as credits allow (rate None) or paced at ``rate`` per second; then stay
    connected (heartbeating) until ``done`` is set, so that no queued frame is lost."""
    ctx = zmq.Context()
    link = _CameraLink(ctx, endpoint, via_broker)
    payloads = [_frame(i, size) for i in range(8)]
    start = time.perf_counter() + 0.2
    for i in range(count):
        link.service()
        link.take_credit()
        if rate is None:
            link.sock.send(payloads[i % len(payloads)], copy=False)
            continue
        due = start + i / rate
        while (left := due - time.perf_counter()) > 0:
            time.sleep(min(left, 0.001) if left > 0.0015 else 0)
        link.sock.send(_frame(i, size), copy=False)
    deadline = time.monotonic() + PEER_TIMEOUT_S
    while not done.is_set() and time.monotonic() < deadline:
        link.service(wait_ms=20)
    link.sock.close(0)
    ctx.term()


def _worker_socket(ctx: zmq.Context, endpoint: str, via_broker: bool) -> zmq.Socket:
    if via_broker:
        sock = configure(ctx.socket(zmq.DEALER))
        sock.setsockopt(zmq.ROUTING_ID, b"wrk:bench")
        sock.connect(endpoint)
    else:
        sock = configure(ctx.socket(zmq.ROUTER))
        sock.bind(endpoint)
    return sock


def worker_process(endpoint: str, via_broker: bool, count: int, capacity: int, conn: Any) -> None:
    """Receive ``count`` frames; send back (receive times, send_ts of each frame)."""
    ctx = zmq.Context()
    sock = _worker_socket(ctx, endpoint, via_broker)
    conn.send(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    received, stamps, seq, next_beat = [], [], 0, 0.0
    deadline = time.monotonic() + PEER_TIMEOUT_S
    while len(received) < count and time.monotonic() < deadline:
        got = 0
        if sock.poll(20):
            while len(received) < count:
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.time()
                msg = decode(parts[-1], MAX_BYTES)
                if isinstance(msg, Frame):
                    received.append(now)
                    stamps.append(msg.send_ts)
                    got += 1
        if via_broker and (got or time.monotonic() >= next_beat or seq == 0):
            seq += 1
            sock.send(_heartbeat("bench", "worker", seq, capacity if seq == 1 else got))
            next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
    conn.send((received, stamps))
    sock.close(0)
    ctx.term()


# ------------------------------------------------------------------------------------------------ runs
def _start_broker(window: int) -> tuple[Broker, threading.Event, threading.Thread]:
    cfg = BrokerConfig(frontend=ANY, backend=ANY, events_in=ANY, events_out=ANY, camera_credits=window,
                       camera_queue=min(64, window), metrics_port=0)
    broker = Broker(cfg, SecurityConfig(), ProtocolConfig(max_message_bytes=MAX_BYTES), CollectorRegistry())
    stop = threading.Event()
    thread = threading.Thread(target=broker.run, args=(stop,), daemon=True)
    thread.start()
    return broker, stop, thread


def run_once(args: argparse.Namespace, via_broker: bool, count: int, rate: float | None) -> dict[str, Any]:
    """One camera -> (broker ->) worker run; returns throughput and latency percentiles."""
    ctx = mp.get_context("spawn")
    broker = stop = thread = None
    if via_broker:
        broker, stop, thread = _start_broker(args.window)
    parent, child = ctx.Pipe()
    worker_endpoint = broker.endpoints["backend"] if broker else ANY
    worker = ctx.Process(target=worker_process, args=(worker_endpoint, via_broker, count, args.window, child))
    done = ctx.Event()
    camera = None
    try:  # on a timeout or error no process or broker thread is left behind
        worker.start()
        if not parent.poll(PEER_TIMEOUT_S):
            raise TimeoutError("worker process did not report its endpoint")
        bound = parent.recv()
        camera_endpoint = broker.endpoints["frontend"] if broker else bound
        camera = ctx.Process(target=camera_process, args=(camera_endpoint, via_broker, count, args.size, rate, done))
        camera.start()
        if not parent.poll(PEER_TIMEOUT_S):
            raise TimeoutError("worker process sent no result")
        received, stamps = parent.recv()
    finally:
        done.set()
        for proc in (worker, camera):
            if proc is not None and proc.pid is not None:
                proc.join(PEER_TIMEOUT_S)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        if broker is not None:
            stop.set()
            thread.join()
            broker.close()
    if len(received) < count:
        raise RuntimeError(f"only {len(received)} of {count} frames arrived")
    lat = (np.asarray(received) - np.asarray(stamps)) * 1000.0
    return {"messages_per_s": (count - 1) / (received[-1] - received[0]),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def run_repeat(args: argparse.Namespace) -> dict[str, Any]:
    throughput = run_once(args, True, args.messages, None)["messages_per_s"]
    n = int(args.rate * args.seconds)
    direct = run_once(args, False, n, args.rate)
    brokered = run_once(args, True, n, args.rate)
    return {"messages_per_s": throughput, "direct_p50_ms": direct["p50_ms"], "direct_p99_ms": direct["p99_ms"],
            "broker_p50_ms": brokered["p50_ms"], "broker_p99_ms": brokered["p99_ms"],
            "p50_added_latency_ms": brokered["p50_ms"] - direct["p50_ms"],
            "p99_added_latency_ms": brokered["p99_ms"] - direct["p99_ms"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="argusnet bench broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="OUT", type=Path, help="write the results to this JSON file")
    parser.add_argument("--messages", type=int, default=20_000, help="frames sent in the throughput run")
    parser.add_argument("--size", type=int, default=100_000, help="JPEG bytes per frame (default 100 KB)")
    parser.add_argument("--rate", type=float, default=1000.0, help="frames/s in the latency runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each latency run")
    parser.add_argument("--window", type=int, default=16, help="camera credits = worker capacity")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the report gives their medians")
    args = parser.parse_args(argv)
    repeats = [run_repeat(args) for _ in range(args.repeats)]
    result: dict[str, Any] = {k: statistics.median(r[k] for r in repeats) for k in repeats[0]}
    result.update({"frame_bytes": args.size, "rate_per_s": args.rate, "window": args.window,
                   "targets": {"messages_per_s": ">= 5000", "p99_added_latency_ms": "<= 2"}, "repeats": repeats})
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
