"""Shared pieces of the benchmarks: argument parsing, machine description, timing, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, metavar="OUT", help="write the result as JSON here")
    return p


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # what CPU inference speed hangs on


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the same VM name can hide CPUs with and without AVX-512)."""
    import numpy as np
    import onnxruntime as ort

    model, flags = _cpu_info()
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": model, "simd": [f for f in SIMD_FLAGS if f in flags], "numpy": np.__version__,
            "onnxruntime": ort.__version__}


def _cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (platform.processor() and no flags elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor(), set()
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines():  # one block per core: the first value of each key is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields.get("model name", platform.processor()), set(fields.get("flags", "").split())


def timings_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 3), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "min": round(ordered[0], 3), "runs": len(ordered)}


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print the result and write it to ``out`` (parent folders created)."""
    result = {**result, "machine": machine(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
