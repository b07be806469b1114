"""Link benchmark: one 720p camera node behind a shaped network link, the real broker and one real worker.

The camera (`argusnet camera`, a real node process) runs in its own network namespace, joined to the root
namespace by one veth pair on the small subnet 10.213.9.0/29 (broker side .1, camera side .2; no route anywhere
else, so nothing leaves the machine). Both ends of the pair are shaped with `tc qdisc ... tbf rate R` (the camera
-> broker direction, which carries the frames, and the way back, which carries credits and TCP ACKs): a symmetric
link of rate R with a token bucket of ``burst`` bytes and a queue of at most ``--tbf-latency-ms`` (a modest router
buffer). The broker (`argusnet broker`, its camera socket on 10.213.9.1) and one worker (`argusnet worker`, the
default tracked pipeline, a gallery holding the demo portrait) run in the root namespace; events are read from the
broker's event stream in this process, as `argusnet events` reads them.

The source is a looping 1280x720 clip (arcade.mp4 from ../shared/data/facenet-pytorch scaled to 720p and resampled
to the camera's rate, else the built-in demo scene) asked for at 10 fps. Per rate, after a warm-up that lets flow
control settle, over a window of ``--seconds``:

- ``delivered_fps``: frames of the camera received by the worker per second;
- ``jpeg_quality``, ``max_side`` and ``camera_fps``: what the node's flow control chose (its
  argusnet_camera_jpeg_quality, argusnet_camera_max_side and argusnet_camera_fps gauges, sampled every 0.5 s:
  median, min, max), and ``node_link_kbit``: the link rate the node measured from its credits (median);
- ``p50_latency_ms`` / ``p95_latency_ms``: capture on the node -> event received here, over the track_started and
  track_identified events of the window (the worker's end-to-end latency plus the event stream);
- ``queue_max``: the node's capture queue (argusnet_queue_depth{queue="camera:ID"}, sampled); ``in_flight_max``:
  frames sent and not yet credited back (the broker's window minus the credits the node holds), and
  ``in_flight_kb_max`` their bytes (argusnet_camera_in_flight_bytes); and the bytes waiting in the node's TCP
  send buffer (``ss``) and in the tbf queue, sampled: where frames actually wait;
- ``captured_fps`` and ``capture_to_send_p95_ms``: frames the node captured per second, and how long they waited
  in its queue for a credit (its capture_to_send histogram, interpolated); ``send_to_worker_p50_ms`` /
  ``_p95_ms``: sent on the node -> received by the worker (the worker's "broker" stage: the link, the TCP send
  buffer and the broker), per frame;
- ``dropped``: frames dropped by the node, the broker and the worker (all reasons), with the breakdown;
- ``frame_kb``: bytes the camera put on the link per frame sent, and the frame rate the link could carry at that
  size (``link_fps_ceiling``).

Target (issue 14): at 4 Mbit/s a 720p camera keeps >= 5 fps with p95 capture -> event <= 500 ms and a bounded
queue (flow control lowers rate and quality instead of queueing).

What-if runs (settings, not code): ``--camera-setting jpeg_quality=50`` (also min_jpeg_quality, min_fps, max_side,
min_max_side, queue) and ``--camera-credits N`` (broker.camera_credits, the frames a camera may have in flight).

Needs root (ip netns, tc) and iproute2. Run: argusnet bench link [--rate 4mbit ...] --json out/bench-link.json
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import cv2
import numpy as np
import yaml
import zmq

from argusnet.launcher import free_port
from bench.camera import frames_720p
from bench.common import emit, parser
from shared import metrics as m
from shared.errors import InputError, ProtocolError
from shared.protocol import ProtocolConfig, TrackEvent, decode_as
from shared.zmq_defaults import EVENT_HWM, configure

REPO = Path(__file__).resolve().parents[1]
SUBNET_PREFIXLEN = 29
BROKER_IP, CAMERA_IP = "10.213.9.1", "10.213.9.2"  # 10.213.9.0/29: the root namespace's end, the camera's end
NS_PREFIX = "argusnet-bench"
CAMERA_IF = "eth0"
CAMERA_METRICS_PORT = 9300  # inside the camera's own namespace: nothing else listens there
DEFAULT_RATES = ("2mbit", "4mbit", "10mbit", "unshaped")
RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(kbit|mbit|gbit)$")
RATE_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
MIN_BURST_BYTES = 16 * 1024
SAMPLE_S = 0.5
CLIP_FPS = 25.0  # arcade.mp4
START_S = 180.0  # worker model load (and the dlib ONNX export on a first run)
FIRST_FRAME_S = 60.0
BROKER_WINDOW = 4  # broker.camera_credits default: frames a camera may have in flight
WHAT_IF_SETTINGS = ("jpeg_quality", "min_jpeg_quality", "min_fps", "max_side", "min_max_side", "queue")
CAMERA_MAX_SIDE = f"{m.PREFIX}_camera_max_side"  # the node's own gauges (camera_node/node.py)
CAMERA_LINK_RATE = f"{m.PREFIX}_camera_link_bytes_per_second"
CAMERA_IN_FLIGHT = f"{m.PREFIX}_camera_in_flight_bytes"
TARGET = {"rate": "4mbit", "delivered_fps_min": 5.0, "p95_latency_ms_max": 500.0}
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ rates
def parse_rate(text: str) -> tuple[str, float | None]:
    """('4mbit', 4e6) from '4mbit'; ('unshaped', None); InputError for anything else."""
    text = text.strip().lower()
    if text in ("unshaped", "none"):
        return "unshaped", None
    found = RATE_RE.match(text)
    if not found:
        raise InputError(f"--rate {text!r}: give a tc rate such as 500kbit, 4mbit, 1gbit, or 'unshaped'")
    bps = float(found.group(1)) * RATE_UNITS[found.group(2)]
    if not 64e3 <= bps <= 10e9:
        raise InputError(f"--rate {text}: must be between 64kbit and 10gbit")
    return text, bps


def burst_bytes(bps: float) -> int:
    """The token bucket: 10 ms of the rate, at least 16 KiB (tbf needs at least rate / HZ)."""
    return max(MIN_BURST_BYTES, int(bps / 8 * 0.01))


# ------------------------------------------------------------------------------------------ the namespace
def _cmd(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)
    except subprocess.CalledProcessError as exc:
        raise InputError(f"`{' '.join(argv)}` failed: {exc.stderr.strip()}") from exc


def unavailable() -> str | None:
    """Why the shaped link cannot be made here, or None."""
    if os.geteuid() != 0:
        return "the link benchmark needs root (ip netns, tc)"
    missing = [tool for tool in ("ip", "tc", "ss") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)} (iproute2)" if missing else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all_in(ns: str) -> None:
    for pid in _cmd("ip", "netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def sweep_stale() -> None:
    """Remove the namespaces (with their veth pairs and processes) of earlier runs whose process is gone."""
    pattern = re.compile(rf"^{NS_PREFIX}-(\d+)-cam$")
    for line in _cmd("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        found = pattern.match(name)
        if found and not _pid_alive(int(found.group(1))):
            _kill_all_in(name)
            _cmd("ip", "netns", "del", name, check=False)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def enter_netns(ns: str) -> None:
    """Move the calling thread (only it: a network namespace is per thread) into namespace ``ns``."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[[], T], timeout: float = 10.0) -> T:
    """``fn()`` run in a short-lived thread that joined namespace ``ns`` (its sockets are there)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(ns)
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"a call in namespace {ns} did not return within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


class CameraLink:
    """The camera's namespace and its veth pair, shaped with tbf; ``close()`` kills what runs in the namespace and
    deletes it (the veth pair goes with it). Safe after a partial build."""

    def __init__(self, tbf_latency_ms: float) -> None:
        self.ns = f"{NS_PREFIX}-{os.getpid()}-cam"
        self.veth = f"abl{os.getpid()}"[:15]
        self.tbf_latency_ms = tbf_latency_ms
        self.made = False

    def __enter__(self) -> "CameraLink":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        sweep_stale()
        if re.search(rf"(^|\s){re.escape(BROKER_IP)}/", _cmd("ip", "-br", "addr").stdout):
            raise InputError(f"{BROKER_IP} is already an address here (another link benchmark running?)")
        _cmd("ip", "netns", "add", self.ns)
        self.made = True
        _cmd("ip", "link", "add", self.veth, "type", "veth", "peer", "name", CAMERA_IF, "netns", self.ns)
        _cmd("ip", "addr", "add", f"{BROKER_IP}/{SUBNET_PREFIXLEN}", "dev", self.veth)
        _cmd("ip", "link", "set", self.veth, "up")
        _cmd("ip", "-n", self.ns, "addr", "add", f"{CAMERA_IP}/{SUBNET_PREFIXLEN}", "dev", CAMERA_IF)
        _cmd("ip", "-n", self.ns, "link", "set", CAMERA_IF, "up")
        _cmd("ip", "-n", self.ns, "link", "set", "lo", "up")

    def _ends(self) -> tuple[tuple[list[str], str], ...]:
        return (["-n", self.ns], CAMERA_IF), ([], self.veth)

    def shape(self, bps: float | None) -> None:
        """tbf at ``bps`` on both ends (None: no qdisc, the veth's own unshaped speed)."""
        for netns, dev in self._ends():
            _cmd("tc", *netns, "qdisc", "del", "dev", dev, "root", check=False)
            if bps is not None:
                _cmd("tc", *netns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{int(bps)}bit", "burst",
                     str(burst_bytes(bps)), "latency", f"{self.tbf_latency_ms:g}ms")

    def counters(self) -> dict[str, float]:
        """Bytes the camera's end has sent, and its tbf queue's drops and backlog (0 without tbf)."""
        link = json.loads(_cmd("ip", "-n", self.ns, "-s", "-j", "link", "show", "dev", CAMERA_IF).stdout)[0]
        qdiscs = json.loads(_cmd("tc", "-n", self.ns, "-s", "-j", "qdisc", "show", "dev", CAMERA_IF).stdout or "[]")
        tbf = next((q for q in qdiscs if q.get("kind") == "tbf"), {})
        return {"tx_bytes": float(link["stats64"]["tx"]["bytes"]), "tbf_drops": float(tbf.get("drops", 0)),
                "tbf_backlog": float(tbf.get("backlog", 0))}

    def send_queue_bytes(self, port: int) -> int:
        """Bytes in the camera's TCP send buffers towards the broker (sent and not acknowledged, or not sent yet)."""
        out = _cmd("ss", "-N", self.ns, "-tnH", "dst", f"{BROKER_IP}:{port}", check=False).stdout
        return sum(int(line.split()[2]) for line in out.splitlines() if len(line.split()) >= 3)

    def close(self) -> None:
        if not self.made:
            return
        _kill_all_in(self.ns)
        _cmd("ip", "link", "del", self.veth, check=False)
        _cmd("ip", "netns", "del", self.ns, check=False)
        self.made = False


# ------------------------------------------------------------------------------------------ processes, metrics
def scrape(port: int) -> dict[str, list[tuple[dict, float]]]:
    """metric sample name -> [(labels, value)] from http://127.0.0.1:PORT/metrics (of the caller's namespace)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict, float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(metrics: dict, name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(v for lab, v in metrics.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def buckets(metrics: dict, name: str, **labels: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets [(le, count)], le ascending (+Inf last)."""
    rows = [(float(lab["le"]), v) for lab, v in metrics.get(name + "_bucket", [])
            if all(lab.get(k) == x for k, x in labels.items())]
    return sorted(rows)


def histogram_quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of the observations made between two scrapes of one histogram, interpolated linearly inside
    its bucket (as Prometheus' histogram_quantile); None when nothing was observed."""
    start = dict(before)
    delta = [(le, count - start.get(le, 0.0)) for le, count in after]
    if not delta or delta[-1][1] <= 0:
        return None
    rank, lower, below = q * delta[-1][1], 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return lower


def percentiles_ms(values_s: Sequence[float]) -> tuple[float | None, float | None]:
    if not values_s:
        return None, None
    p50, p95 = np.percentile(np.asarray(values_s) * 1000.0, [50, 95])
    return round(float(p50), 1), round(float(p95), 1)


class Procs:
    """Real `argusnet` processes (optionally in a namespace, with `ip netns exec`), output in LOGS/NAME.log."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, args: Sequence[str], ns: str | None = None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "argusnet", "--log-level", "INFO", *args]
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def wait_serving(self, name: str, fetch: Callable[[], dict], timeout: float = START_S) -> dict:
        """The process's first metrics; RuntimeError (with its log) when it exits or serves none in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fetch()
            except OSError:
                if self.procs[name].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} (exit code {self.procs[name].poll()}) served no metrics within "
                                       f"{timeout:.0f} s:\n{self.tail(name)}") from None
                time.sleep(0.5)

    def close(self) -> None:
        for name in self.procs:
            self.stop(name)


def enrolled_gallery(path: Path) -> Path:
    """A local store holding the demo portrait (so the worker has someone to search, as in `argusnet up`)."""
    from argusnet.commands.demo import enrol_demo_person
    from argusnet.config import load_config
    from gpu_worker.engine import Engine
    from store.config import LocalStoreConfig

    enrol_demo_person(Engine(load_config()), LocalStoreConfig(path=path)).close()
    return path


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` on top, mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_config(path: Path, frontend_host: str, extra: dict | None = None) -> dict[str, int]:
    """A site configuration with the broker on free ports (its camera socket on ``frontend_host``); the ports."""
    ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "broker_metrics",
                                      "worker_metrics")}
    cfg: dict[str, Any] = {"broker": {"frontend": f"tcp://{frontend_host}:{ports['frontend']}",
                                      "backend": f"tcp://127.0.0.1:{ports['backend']}",
                                      "events_in": f"tcp://127.0.0.1:{ports['events_in']}",
                                      "events_out": f"tcp://127.0.0.1:{ports['events_out']}",
                                      "metrics_port": ports["broker_metrics"],
                                      # plain text over the benchmark's own veth link (the broker and the camera
                                      # refuse an address off loopback without CURVE otherwise)
                                      "allow_plaintext": True}}
    path.write_text(yaml.safe_dump(deep_merge(cfg, extra or {})))
    return ports


def start_core(procs: Procs, config: Path, ports: dict[str, int], gallery: Path, worker_id: str = "w1") -> None:
    """`argusnet broker` and `argusnet worker`, each serving its metrics."""
    procs.start("broker", ["--config", str(config), "broker"])
    procs.wait_serving("broker", lambda: scrape(ports["broker_metrics"]), 60.0)
    procs.start(worker_id, ["--config", str(config), "worker", "--id", worker_id, "--gallery", str(gallery),
                            "--metrics-port", str(ports["worker_metrics"])])
    procs.wait_serving(worker_id, lambda: scrape(ports["worker_metrics"]))


class EventTap:
    """Subscribes to the broker's event stream in a thread: (camera, type, capture_ts, received) per event."""

    def __init__(self, endpoint: str) -> None:
        self.events: list[tuple[str, str, float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.max_bytes = ProtocolConfig().max_message_bytes
        sock = configure(zmq.Context.instance().socket(zmq.SUB), hwm=EVENT_HWM)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        self._thread = threading.Thread(target=self._run, args=(sock,), name="event-tap", daemon=True)
        self._thread.start()

    def _run(self, sock: zmq.Socket) -> None:
        while not self._stop.is_set():
            if not sock.poll(100):
                continue
            parts = sock.recv_multipart()
            received = time.time()
            try:
                event = decode_as(TrackEvent, parts[-1], self.max_bytes)
            except ProtocolError:
                continue
            with self._lock:
                self.events.append((event.camera, event.type, event.capture_ts, received))
        sock.close(0)

    def latencies(self, cameras: Callable[[str], bool], t0: float, t1: float) -> list[float]:
        """Capture -> received (s) of the track_started / track_identified events of ``cameras`` received in
        [t0, t1]."""
        with self._lock:
            return [got - cap for cam, kind, cap, got in self.events
                    if kind != "track_ended" and cameras(cam) and t0 <= got <= t1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Sampler:
    """Calls ``fn()`` every ``interval`` s in a thread until ``stop()``; keeps what it returns (failures skipped)."""

    def __init__(self, fn: Callable[[], dict], interval: float = SAMPLE_S) -> None:
        self.fn, self.interval = fn, interval
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.fn())
            except (OSError, ValueError, TimeoutError, InputError):
                continue

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples


# ------------------------------------------------------------------------------------------ the run
def write_clip(folder: Path, fps: float) -> tuple[Path, str]:
    """A 1280x720 MJPEG clip of arcade.mp4 (else of the demo scene), resampled from 25 fps to ``fps``, and what it
    is: a camera delivering 720p at the rate it is asked for."""
    frames, what = frames_720p(105)
    picked = [frames[round(k * CLIP_FPS / fps)] for k in range(int(len(frames) * fps / CLIP_FPS))]
    path = folder / "clip-720p.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (1280, 720))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    for frame in picked:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path, f"{what}, {len(picked)} frames at {fps:g} fps (resampled from 25 fps), looping"


@dataclass
class LinkRun:
    link: CameraLink
    procs: Procs
    tap: EventTap
    config: Path
    clip: Path
    ports: dict[str, int]
    fps: float
    warmup_s: float
    seconds: float
    window: int = BROKER_WINDOW

    def camera_metrics(self) -> dict:
        return in_netns(self.link.ns, lambda: scrape(CAMERA_METRICS_PORT))

    def snapshot(self) -> dict:
        return {"worker": scrape(self.ports["worker_metrics"]), "broker": scrape(self.ports["broker_metrics"]),
                "camera": self.camera_metrics(), "link": self.link.counters(), "t": time.time()}

    def sample(self, camera: str) -> dict:
        cam = self.camera_metrics()
        broker = scrape(self.ports["broker_metrics"])
        return {"fps": total(cam, m.CAMERA_FPS, camera=camera), "quality": total(cam, m.CAMERA_JPEG_QUALITY,
                                                                                     camera=camera),
                "credits": total(cam, m.CAMERA_CREDITS, camera=camera),
                "max_side": total(cam, CAMERA_MAX_SIDE, camera=camera),
                "link_rate": total(cam, CAMERA_LINK_RATE, camera=camera),
                "in_flight": total(cam, CAMERA_IN_FLIGHT, camera=camera),
                "queue": total(cam, m.QUEUE_DEPTH, queue=f"camera:{camera}"),
                "send_q": self.link.send_queue_bytes(self.ports["frontend"]),
                "tbf_backlog": self.link.counters()["tbf_backlog"],
                "broker_queue": total(broker, m.BROKER_QUEUE_DEPTH, camera=camera)}

    def start_camera(self, camera: str) -> None:
        self.procs.start(camera, ["--config", str(self.config), "camera", "--index", "0", "--id", camera,
                                  "--broker", f"tcp://{BROKER_IP}:{self.ports['frontend']}", "--fps", f"{self.fps:g}",
                                  "--metrics-port", str(CAMERA_METRICS_PORT)], ns=self.link.ns)
        deadline = time.monotonic() + FIRST_FRAME_S
        while total(scrape(self.ports["worker_metrics"]), m.FRAMES_IN, camera=camera) <= 0:
            if self.procs.procs[camera].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"camera {camera}: no frame reached the worker within {FIRST_FRAME_S:.0f} s:\n"
                                   f"{self.procs.tail(camera)}")
            time.sleep(0.5)

    def measure(self, label: str, bps: float | None) -> dict:
        camera = f"cam-{label}"
        self.link.shape(bps)
        self.start_camera(camera)
        try:
            time.sleep(self.warmup_s)
            before = self.snapshot()
            sampler = Sampler(lambda: self.sample(camera))
            time.sleep(self.seconds)
            samples = sampler.stop()
            after = self.snapshot()
        finally:
            self.procs.stop(camera)
        latencies = self.tap.latencies(lambda c: c == camera, before["t"], after["t"])
        return summarize(label, bps, camera, before, after, samples, latencies, self.window)


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(float(np.median(values)), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def _drops(before: dict, after: dict, camera: str) -> dict[str, int]:
    out = {}
    for side, reasons in (("camera", m.CAMERA_DROP_REASONS), ("broker", m.BROKER_DROP_REASONS),
                          ("worker", m.WORKER_DROP_REASONS)):
        for reason in reasons:
            n = total(after[side], m.FRAMES_DROPPED, camera=camera, reason=reason) - \
                total(before[side], m.FRAMES_DROPPED, camera=camera, reason=reason)
            if n:
                out[f"{side}:{reason}"] = int(n)
    return out


def summarize(label: str, bps: float | None, camera: str, before: dict, after: dict, samples: list[dict],
              latencies: list[float], window: int) -> dict:
    seconds = after["t"] - before["t"]

    def delta(side: str, name: str, **labels: str) -> float:
        return total(after[side], name, **labels) - total(before[side], name, **labels)

    delivered = delta("worker", m.FRAMES_IN, camera=camera)
    sent = delta("camera", m.CAMERA_FRAMES, camera=camera, outcome="sent")
    frame_bytes = (after["link"]["tx_bytes"] - before["link"]["tx_bytes"]) / max(sent, 1)
    p50, p95 = percentiles_ms(latencies)
    drops = _drops(before, after, camera)
    transfer = [buckets(s["worker"], m.STAGE_LATENCY, stage="broker") for s in (before, after)]
    waited = [buckets(s["camera"], m.STAGE_LATENCY, stage="capture_to_send") for s in (before, after)]
    quality = _spread([s["quality"] for s in samples])
    return {
        "rate": label, "rate_bps": bps, "seconds": round(seconds, 1),
        "delivered_fps": round(delivered / seconds, 2),
        "processed_fps": round(delta("worker", m.FRAMES_OUT, camera=camera) / seconds, 2),
        "jpeg_quality": quality["median"], "jpeg_quality_range": [quality["min"], quality["max"]],
        "max_side": _spread([s["max_side"] for s in samples]),
        "camera_fps": _spread([s["fps"] for s in samples]),
        "node_link_kbit": _spread([s["link_rate"] * 8 / 1000 for s in samples])["median"],
        "p50_latency_ms": p50, "p95_latency_ms": p95, "latency_events": len(latencies),
        "captured_fps": round(delta("camera", m.CAMERA_FRAMES, camera=camera, outcome="captured") / seconds, 2),
        "capture_to_send_p95_ms": _ms(histogram_quantile(*waited, 0.95)),
        "send_to_worker_p50_ms": _ms(histogram_quantile(*transfer, 0.5)),
        "send_to_worker_p95_ms": _ms(histogram_quantile(*transfer, 0.95)),
        "queue_max": int(max((s["queue"] for s in samples), default=0)),
        "in_flight_max": int(window - min((s["credits"] for s in samples), default=window)),
        "in_flight_kb_max": round(max((s["in_flight"] for s in samples), default=0) / 1024, 1),
        "tcp_send_queue_max_kb": round(max((s["send_q"] for s in samples), default=0) / 1024, 1),
        "tbf_backlog_max_kb": round(max((s["tbf_backlog"] for s in samples), default=0) / 1024, 1),
        "broker_queue_max": int(max((s["broker_queue"] for s in samples), default=0)),
        "tbf_drops_packets": int(after["link"]["tbf_drops"] - before["link"]["tbf_drops"]),
        "dropped": sum(drops.values()), "dropped_by": drops,
        "frame_kb": round(frame_bytes / 1024, 1),
        "link_fps_ceiling": None if bps is None else round(bps / 8 / max(frame_bytes, 1), 2),
        "samples": len(samples),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def verdict(results: list[dict], queue: int, window: int) -> dict:
    row = next((r for r in results if r["rate"] == TARGET["rate"]), None)
    if row is None:
        return {**TARGET, "met": None, "note": f"{TARGET['rate']} was not among the rates run"}
    checks = {"fps": row["delivered_fps"] >= TARGET["delivered_fps_min"],
              "p95": row["p95_latency_ms"] is not None and row["p95_latency_ms"] <= TARGET["p95_latency_ms_max"],
              "queue_bounded": row["queue_max"] <= queue and row["in_flight_max"] <= window}
    return {**TARGET, "checks": checks, "met": all(checks.values())}


def camera_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """--camera-setting KEY=VALUE pairs (what-if runs), checked against the camera's own schema."""
    from pydantic import ValidationError

    from camera_node.config import CameraConfig
    from shared.schema import format_validation_error

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in WHAT_IF_SETTINGS:
            raise InputError(f"--camera-setting {pair!r}: give KEY=VALUE with KEY one of {', '.join(WHAT_IF_SETTINGS)}")
        out[key] = yaml.safe_load(value)
    try:
        CameraConfig.model_validate({"id": "link", "source": "demo", **out})
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "--camera-setting")) from exc
    return out


def _check_args(args: Any) -> None:
    for name, low, high in (("seconds", 5, 600), ("warmup", 0, 120), ("fps", 1, 30), ("tbf_latency_ms", 1, 5000)):
        value = getattr(args, name)
        if not low <= value <= high:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be between {low} and {high}")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rate", action="append", metavar="RATE",
                   help="link rate as tc writes it (500kbit, 4mbit) or 'unshaped'; repeat for several; default: "
                   + ", ".join(DEFAULT_RATES))
    p.add_argument("--seconds", type=float, default=30.0, help="measured window per rate")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds per rate before the window (flow control "
                   "settles)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate the camera asks for")
    p.add_argument("--tbf-latency-ms", type=float, default=100.0, help="tbf queue limit, as time at the rate")
    p.add_argument("--camera-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="what-if: a camera setting other than its default (" + ", ".join(WHAT_IF_SETTINGS) + ")")
    p.add_argument("--camera-credits", type=int, default=BROKER_WINDOW,
                   help="what-if: broker.camera_credits (frames a camera may have in flight)")
    args = p.parse_args(argv)
    _check_args(args)
    rates = [parse_rate(r) for r in (args.rate or DEFAULT_RATES)]
    settings = camera_settings(args.camera_setting)
    why = unavailable()
    if why:
        raise InputError(why)
    with tempfile.TemporaryDirectory(prefix="argusnet-link-") as tmp_name, Procs(Path(tmp_name)) as procs, \
            CameraLink(args.tbf_latency_ms) as link:
        tmp = Path(tmp_name)
        clip, source = write_clip(tmp, args.fps)
        config = tmp / "argusnet.yaml"
        ports = write_config(config, BROKER_IP, {"broker": {"camera_credits": args.camera_credits},
                                                 "up": {"cameras": [{"id": "link", "source": str(clip), **settings}]}})
        start_core(procs, config, ports, enrolled_gallery(tmp / "gallery"))
        tap = EventTap(f"tcp://127.0.0.1:{ports['events_out']}")
        run = LinkRun(link, procs, tap, config, clip, ports, args.fps, args.warmup, args.seconds, args.camera_credits)
        try:
            results = []
            for label, bps in rates:
                results.append(run.measure(label, bps))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        finally:
            tap.close()
    result = {"benchmark": "link", "source": source, "fps_requested": args.fps,
              "camera_settings": settings or "defaults (jpeg_quality 85, min_jpeg_quality 50, max_side 1280, "
                                             "min_max_side 640, min_fps 1, queue 2)",
              "broker_camera_credits": args.camera_credits,
              "tbf": {"both_directions": True, "latency_ms": args.tbf_latency_ms,
                      "burst": "max(16 KiB, 10 ms of the rate)"},
              "results": results, "target": verdict(results, settings.get("queue", 2), args.camera_credits)}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
