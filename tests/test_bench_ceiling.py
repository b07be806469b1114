"""bench/ceiling.py, the host's ceiling the capacity benchmark reports: decoding and detecting real JPEGs cost CPU
time, and the cameras those two steps fill the cores with follow from it."""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.data import astronaut

from bench.ceiling import ceiling, host_cores
from camera_node.node import encode_jpeg


def portrait_jpegs() -> list[bytes]:
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    canvas[120:600, 400:880] = cv2.resize(astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    return [encode_jpeg(np.roll(canvas, 8 * k, axis=1), 85) for k in range(3)]


def test_the_ceiling_is_the_cores_over_what_one_camera_costs_in_decoding_and_detecting():
    out = ceiling(portrait_jpegs(), {"worker": {"detect_threads": 2}}, fps=10.0, rounds=2, per_round=3)
    assert out["cores"] == host_cores() and out["frame_shape"] == [720, 1280, 3]
    assert out["onnx_threads"] == max(1, host_cores() // 2)  # as a worker's two detection threads get them
    assert out["decode_cpu_ms"] > 0 and out["detect_cpu_ms"] > out["decode_cpu_ms"]
    per_camera = 10.0 * (out["decode_cpu_ms"] + out["detect_cpu_ms"]) / 1000.0
    assert math.isclose(out["cores_per_camera"], per_camera, abs_tol=0.001)
    assert out["cameras_max"] == math.floor(out["cores"] / out["cores_per_camera"])
