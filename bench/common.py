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


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy as np
    import onnxruntime as ort

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": _cpu_model(), "numpy": np.__version__, "onnxruntime": ort.__version__}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


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
