"""The output formats issue 14 names for `argusnet bench capacity` and `argusnet bench link` (other tools read them):
each benchmark run for real at its smallest (one camera, a few seconds), its JSON checked key by key. What the
numbers reach is for BENCHMARKS.md, not asserted here; that they are measured (frames went through) is."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from bench import link

CAPACITY_KEYS = {"cameras_sustained", "cameras_sustained_per_frame", "fps_per_camera", "p95_latency_ms", "drop_rate"}
LINK_KEYS = {"rate", "delivered_fps", "jpeg_quality", "p50_latency_ms", "p95_latency_ms", "queue_max", "dropped"}
CEILING_KEYS = {"cores", "decode_cpu_ms", "detect_cpu_ms", "cores_per_camera", "cameras_max"}


def test_bench_capacity_writes_the_issue_keys_for_both_ramps(cli, tmp_path):
    out = tmp_path / "capacity.json"
    result = cli("bench", "capacity", "--max-cameras", "1", "--step-seconds", "5", "--warmup", "1", "--json", out)
    assert result.code == 0, result.err[-3000:]
    data = json.loads(out.read_text())
    assert CAPACITY_KEYS <= set(data)
    assert data["cameras_sustained"] in (0, 1) and data["cameras_sustained_per_frame"] in (0, 1)
    assert CEILING_KEYS <= set(data["ceiling"]) and data["ceiling"]["cameras_max"] >= 0
    for ramp in ("tracked", "per_frame"):
        (step,) = data["steps"][ramp]
        assert step["cameras"] == 1 and step["fps_per_camera"] > 0, (ramp, step)  # frames went through the worker
        assert 0 <= step["drop_rate"] <= 1
    if data["cameras_sustained"]:
        assert data["fps_per_camera"] > 0 and data["p95_latency_ms"] <= 250 and data["drop_rate"] <= 0.01


def leftover_namespaces() -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
    return [n for n in names if n.startswith(link.NS_PREFIX)]


@pytest.mark.skipif(link.unavailable() is not None, reason=str(link.unavailable()))
def test_bench_link_writes_the_issue_keys_and_removes_its_namespace(cli, tmp_path):
    before = leftover_namespaces()
    out = tmp_path / "link.json"
    result = cli("bench", "link", "--rate", "4mbit", "--seconds", "5", "--warmup", "3", "--json", out)
    assert result.code == 0, result.err[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    assert LINK_KEYS <= set(row) and row["rate"] == "4mbit"
    assert row["delivered_fps"] > 0 and 1 <= row["jpeg_quality"] <= 100
    if row["p50_latency_ms"] is not None:  # None only when no event came in the window (a scene without tracks)
        assert math.isfinite(row["p50_latency_ms"]) and row["p50_latency_ms"] <= row["p95_latency_ms"]
    assert isinstance(row["queue_max"], int) and isinstance(row["dropped"], int)
    assert leftover_namespaces() == before  # the camera's namespace (and its veth pair with it) is gone
