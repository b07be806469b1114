"""A throwaway Prometheus for the tests: Debian's real `prometheus` binary on a free loopback port, its data in a
temporary directory, stopped by the test. ``query`` and ``api`` read its HTTP API (/api/v1/...)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argusnet.launcher import free_port

START_TIMEOUT_S = 30.0


class PrometheusError(RuntimeError):
    """The Prometheus HTTP API answered with an error (a bad query, a bad parameter) or not at all."""


@dataclass(frozen=True)
class PrometheusServer:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of GET /api/v1/PATH?PARAMS; PrometheusError naming Prometheus's own error message."""
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400 / 422 carry {"status": "error", "error": ...}
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"GET {url}: HTTP {exc.code}: {detail}") from exc
        except OSError as exc:
            raise PrometheusError(f"GET {url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"GET {url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The result of an instant query: one {"metric": labels, "value": [ts, "text"]} per series."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} is a {data['resultType']}, not an instant vector")
        return data["result"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _ready(server: PrometheusServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1.0) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def start_prometheus(config: Path, directory: Path, attempts: int = 3) -> PrometheusServer:
    """Start Prometheus on ``config`` with its data under ``directory`` on a free loopback port; RuntimeError
    (with the end of its log) when the binary is missing or it does not become ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: `make test` installs it (apt-get install prometheus)")
    log = directory / "prometheus.log"
    for attempt in range(attempts):  # another process may take the free port before Prometheus binds it
        port = free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / f'data-{attempt}'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=out, stderr=out, cwd=directory)
        server = PrometheusServer(process, port, log)
        if _ready(server):
            return server
        server.stop()
    raise RuntimeError(f"prometheus did not become ready after {attempts} attempts:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")
