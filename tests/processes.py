"""Start and stop real `argusnet` processes for the streaming tests, and read their Prometheus metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Callable

import yaml
from prometheus_client.parser import text_string_to_metric_families

from argusnet.launcher import free_port

REPO = Path(__file__).resolve().parents[1]


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """metric sample name -> {sorted label items: value} from http://127.0.0.1:port/metrics ({} if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(metrics: dict, name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for k, v in metrics.get(name, {}).items() if want <= set(k))


class Cluster:
    """A broker, workers and cameras as real processes on 127.0.0.1 ports chosen here; logs in ``tmp``."""

    def __init__(self, tmp: Path, gallery: Path, extra: dict | None = None) -> None:
        self.tmp = tmp
        self.ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "broker_metrics")}
        cfg = {"broker": {"frontend": self.endpoint("frontend"), "backend": self.endpoint("backend"),
                          "events_in": self.endpoint("events_in"), "events_out": self.endpoint("events_out"),
                          "metrics_port": self.ports["broker_metrics"]},
               "up": {"gallery": str(gallery)},
               "worker": {"metrics_port": 0},  # `up`'s worker on a free port, not the default 9200 of every test
               # one ONNX thread per session: two workers with spinning thread pools on a 2-core CI machine can
               # stall an I/O thread past the broker's heartbeat limit
               "runtime": {"threads": 1}}
        for key, value in (extra or {}).items():
            cfg[key] = {**cfg.get(key, {}), **value}
        self.config = tmp / "argusnet.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.procs: dict[str, subprocess.Popen] = {}
        self.metrics_ports: dict[str, int] = {"broker": self.ports["broker_metrics"]}

    def endpoint(self, name: str) -> str:
        return f"tcp://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, *args: str, metrics: bool = True) -> subprocess.Popen:
        port = self.metrics_ports.get(name) or free_port()
        self.metrics_ports[name] = port
        extra = ("--metrics-port", str(port)) if metrics and name != "broker" else ()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
        log = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "argusnet", "--log-level", "INFO", "--config",
                                 str(self.config), *args, *extra], cwd=REPO, env=env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def broker(self) -> subprocess.Popen:
        return self.start("broker", "broker")

    def worker(self, name: str) -> subprocess.Popen:
        return self.start(name, "worker", "--id", name)

    def camera(self, name: str, source: str, *args: str) -> subprocess.Popen:
        return self.start(name, "camera", "--id", name, "--source", source, "--broker", self.endpoint("frontend"),
                          *args)

    def metrics(self, name: str) -> dict:
        return scrape(self.metrics_ports[name])

    def ready(self, name: str, timeout: float = 60) -> bool:
        return wait_until(lambda: bool(self.metrics(name)) or self.procs[name].poll() is not None, timeout, 0.2) \
            and bool(self.metrics(name))

    def not_ready(self, names: list[str], timeout: float = 60) -> str:
        """'' when every named process serves its metrics within ``timeout``; else, for each one that does not,
        its exit code (None while it runs) and the end of its log, for the assertion message."""
        late = [n for n in names if not self.ready(n, timeout)]
        return "\n".join(f"--- {n} (exit code {self.procs[n].poll()}):\n{self.log(n)[-3000:]}" for n in late)

    def stop(self, name: str, sig: int = signal.SIGINT, timeout: float = 15) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} did not stop within {timeout} s after signal {sig}")

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
