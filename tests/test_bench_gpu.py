"""`argusnet bench gpu`, the prepared GPU check, run here on what this host has: on the CPU provider it measures
and writes its JSON; asked for CUDA where ONNX Runtime has none, it refuses instead of measuring the CPU."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest


def test_the_gpu_check_measures_on_the_cpu_provider(cli, tmp_path):
    out = tmp_path / "gpu.json"
    result = cli("bench", "gpu", "--provider", "cpu", "--seconds", "0.2", "--embed-batch", "8", "--detect-batch",
                 "2", "--json", out)
    assert result.code == 0, result.err
    data = json.loads(out.read_text())
    assert data["provider"] == "cpu" and data["embed"]["batch"] == 8 and data["detect"]["batch"] == 2
    assert data["embed"]["per_s"] > 0 and data["detect"]["per_s"] > 0


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this host has CUDA")
def test_asked_for_cuda_without_it_the_check_refuses_instead_of_falling_back(cli, tmp_path):
    result = cli("bench", "gpu", "--seconds", "0.2", "--json", tmp_path / "gpu.json")
    assert result.code != 0 and "cuda" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "gpu.json").exists()
