"""Node memory benchmark: the resident memory of a real camera node (`argusnet camera --config FILE`) streaming a
1280x720 10 fps looping mp4 file (fps 10, max_side 1280, jpeg_quality 85) to a real `argusnet broker` on loopback.

The node runs from ``--node-python`` (a venv of requirements-node.lock alone, `make node VENV=/tmp/nodevenv`, is
what a camera installs; default: this interpreter). The broker runs from this interpreter, with no worker: it
drops the frames (no_worker) and grants their credits back, so the node streams at its full rate. VmRSS is read
from /proc/PID/status once a second for ``--seconds`` after the first frame was sent; also reported: RSS once the
node serves its metrics (before its first frame), VmHWM, /proc/PID/smaps_rollup at the end (anonymous vs file
backed) and the largest mappings by RSS (grouped by file; anonymous ones as ``[anon]``), frames sent per second and
dropped.

Target (issue 14): node RSS <= 100 MB while streaming 720p at 10 fps.

Run: argusnet bench node --node-python /tmp/nodevenv/bin/python --json out/bench-node.json
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

import yaml

from bench.common import emit, parser
from shared import metrics as m
from shared.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SRC_FPS = 25.0  # arcade.mp4
TARGET_MB = 100.0
START_S = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_clip(path: Path, fps: float) -> str:
    """A 1280x720 mp4 (mp4v) of arcade.mp4 (else the demo scene) resampled from 25 fps to ``fps``."""
    import cv2

    from bench.camera import frames_720p

    frames, what = frames_720p(105)
    picked = [frames[round(k * SRC_FPS / fps)] for k in range(int(len(frames) * fps / SRC_FPS))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1280, 720))
    for frame in picked:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return f"{what}, {len(picked)} frames at {fps:g} fps, mp4v, looping"


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+)", text, re.M)
    return int(found.group(1)) if found else 0


def rollup(pid: int) -> dict[str, float]:
    """/proc/PID/smaps_rollup in MB (Rss, Pss, Anonymous, Rss_File = Rss - Anonymous, ...)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            out[key.strip()] = round(int(rest.split()[0]) / 1024, 1)
    out["Rss_File"] = round(out.get("Rss", 0.0) - out.get("Anonymous", 0.0), 1)
    return out


def top_mappings(pid: int, n: int = 12) -> list[dict]:
    """The ``n`` largest contributors to RSS in /proc/PID/smaps, grouped by mapped file ([anon] for the rest)."""
    sizes: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and re.match(r"^[0-9a-f]+-[0-9a-f]+$", head[0]):
            path = head[5] if len(head) > 5 else ""
            name = os.path.basename(path) if path.startswith("/") else (path or "[anon]")
        elif head and head[0] == "Rss:":
            sizes[name] = sizes.get(name, 0) + int(head[1])
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])[:n]
    return [{"mapping": k, "rss_mb": round(v / 1024, 1)} for k, v in ranked]


def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("camera", "queue"))
            out[key] = out.get(key, 0.0) + s.value
    return out


def wait_metrics(proc: subprocess.Popen, port: int, what: str, log: Path) -> dict[str, float]:
    deadline = time.monotonic() + START_S
    while True:
        try:
            return scrape(port)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} served no metrics:\n{log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(0.2)


def sent(metrics: dict[str, float]) -> float:
    return metrics.get(f"{m.CAMERA_FRAMES},outcome=sent", 0.0)


def dropped(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(m.FRAMES_DROPPED + ","))


def write_files(tmp: Path, args) -> tuple[Path, Path, dict[str, int], str]:
    ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "broker_metrics", "camera")}
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({"broker": {
        "frontend": f"tcp://127.0.0.1:{ports['frontend']}", "backend": f"tcp://127.0.0.1:{ports['backend']}",
        "events_in": f"tcp://127.0.0.1:{ports['events_in']}", "events_out": f"tcp://127.0.0.1:{ports['events_out']}",
        "metrics_port": ports["broker_metrics"]}}))
    clip = tmp / "clip-720p-10fps.mp4"
    what = write_clip(clip, args.fps)
    camera = tmp / "camera.yaml"
    camera.write_text(yaml.safe_dump({"id": "rss", "source": str(clip), "loop": True, "fps": args.fps,
                                      "max_side": 1280, "jpeg_quality": 85, "metrics_port": ports["camera"],
                                      "brokers": [f"tcp://127.0.0.1:{ports['frontend']}"]}))
    return site, camera, ports, what


def start(argv: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(node: subprocess.Popen, port: int, seconds: float, log: Path) -> dict:
    first = wait_metrics(node, port, "camera node", log)
    idle_mb = status_kb(node.pid, "VmRSS") / 1024
    deadline = time.monotonic() + START_S
    while sent(first) <= 0:
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"camera node sent no frame:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
        first = scrape(port)
    before, t0, rss = first, time.monotonic(), []
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        rss.append(status_kb(node.pid, "VmRSS") / 1024)
    after, t1 = scrape(port), time.monotonic()
    return {"rss_mb_at_metrics_up": round(idle_mb, 1), "rss_mb_mean": round(statistics.fmean(rss), 1),
            "rss_mb_max": round(max(rss), 1), "rss_mb_min": round(min(rss), 1),
            "vm_hwm_mb": round(status_kb(node.pid, "VmHWM") / 1024, 1), "rss_mb_samples": [round(x, 1) for x in rss],
            "sent_fps": round((sent(after) - sent(before)) / (t1 - t0), 2),
            "dropped": int(dropped(after) - dropped(before)), "threads": status_kb(node.pid, "Threads"),
            "smaps_rollup_mb": rollup(node.pid), "top_mappings": top_mappings(node.pid)}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--node-python", type=Path, default=Path(sys.executable),
                   help="the interpreter of the node's venv (make node VENV=DIR: DIR/bin/python)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long RSS is sampled after the first frame")
    p.add_argument("--fps", type=float, default=10.0, help="the clip's and the camera's frame rate")
    args = p.parse_args(argv)
    if not 5 <= args.seconds <= 3600 or not 1 <= args.fps <= 30:
        raise InputError("--seconds must be in [5, 3600] and --fps in [1, 30]")
    if not os.access(args.node_python, os.X_OK):
        raise InputError(f"--node-python {args.node_python}: not an executable (make node VENV=DIR)")
    with tempfile.TemporaryDirectory(prefix="argusnet-node-rss-") as tmp_name:
        tmp = Path(tmp_name)
        site, camera, ports, what = write_files(tmp, args)
        broker = start([sys.executable, "-m", "argusnet", "--config", str(site), "broker"], tmp / "broker.log")
        node = None
        try:
            wait_metrics(broker, ports["broker_metrics"], "broker", tmp / "broker.log")
            node = start([str(args.node_python), "-m", "argusnet", "camera", "--config", str(camera)],
                         tmp / "node.log")
            result = measure(node, ports["camera"], args.seconds, tmp / "node.log")
        finally:
            for proc in (node, broker):
                if proc is not None:
                    stop(proc)
    result = {"benchmark": "node", "source": what, "node_python": str(args.node_python), "fps": args.fps,
              "max_side": 1280, "jpeg_quality": 85, "seconds": args.seconds, **result,
              "target": {"rss_mb_max": TARGET_MB, "met": result["rss_mb_max"] <= TARGET_MB}}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
