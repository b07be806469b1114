"""`runtime.opencv_threads`: a worker detects on several threads of its own, so by default OpenCV's loops run in the
thread that calls them (no OpenCV pool beside them); 0 leaves OpenCV's default. A real worker's startup line says
what it got: tests/test_streaming.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from gpu_worker.runtime import RuntimeConfig
from tests.processes import REPO

PROBE = """
import cv2
from gpu_worker.runtime import RuntimeConfig, apply_opencv_threads
default = cv2.getNumThreads()
apply_opencv_threads(RuntimeConfig(opencv_threads=0))
unchanged = cv2.getNumThreads()
apply_opencv_threads(RuntimeConfig(opencv_threads=3))
three = cv2.getNumThreads()
apply_opencv_threads(RuntimeConfig())
print(default, unchanged, three, cv2.getNumThreads())
"""


def test_opencv_threads_set_what_opencv_uses_and_zero_leaves_its_default():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    default, unchanged, three, one = map(int, done.stdout.split())
    assert unchanged == default and three == 3 and one == 1


def test_opencv_threads_are_bounded():
    with pytest.raises(ValidationError, match="opencv_threads"):
        RuntimeConfig(opencv_threads=-1)
