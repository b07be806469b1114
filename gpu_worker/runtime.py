"""ONNX Runtime sessions with providers chosen by configuration; the provider actually used is logged
once and exported as ``argusnet_model_provider_info{model, provider}`` by ``ProviderInfo``, a collector the worker
registers on the registry it serves (sessions are made before it exists: they are recorded here)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Iterator, Literal

import cv2
import onnxruntime as ort
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import Field

from shared.errors import ModelError
from shared.metrics import MODEL_PROVIDER
from shared.schema import Section

Provider = Literal["cuda", "cpu"]

class RuntimeConfig(Section):
    providers: list[Provider] = Field(
        default=["cuda", "cpu"], min_length=1,
        description="ONNX Runtime execution providers in order of preference; those not available on this host "
        "are skipped and the one actually used is logged and exported as a metric label.")
    require_provider: Provider | None = Field(
        default=None, description="Fail at start instead of falling back when this provider is not the one used.")
    threads: int = Field(default=0, ge=0, le=256, description="Intra-op CPU threads per ONNX session; 0 = all cores "
                         "(in a worker: the cores divided among its worker.detect_threads, at least 1).")
    opencv_threads: int = Field(
        default=1, ge=0, le=256, description="Threads of OpenCV's own parallel loops (resize, warpAffine, ...) in a "
        "worker; 1 = each loop runs in the thread that calls it: a worker already detects on several threads, and "
        "OpenCV's pool beside them only cost CPU (BENCHMARKS.md: about 5 % of a worker's CPU at 3 cameras); "
        "0 = OpenCV's default (all cores).")
    spin: bool = Field(default=False, description="Let ONNX Runtime's intra-op threads busy-wait between runs (it "
                       "may lower one stream's latency a little, and can keep a core busy, so off by default: a "
                       "worker serving many cameras and the other processes of a host need those cycles).")


log = logging.getLogger(__name__)

ORT_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SHORT_NAMES = {v: k for k, v in ORT_NAMES.items()}

_providers: dict[str, str] = {}  # model name -> the provider its latest session runs on (this process)
_providers_lock = threading.Lock()


class ProviderInfo(Collector):
    """``argusnet_model_provider_info{model, provider} 1`` for every model this process loaded a session of (a
    worker that fell back to the CPU says ``provider="cpu"``)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(MODEL_PROVIDER, "ONNX Runtime provider each model runs on (1 = in use)",
                                   labels=["model", "provider"])
        with _providers_lock:
            used = sorted(_providers.items())
        for model, provider in used:
            family.add_metric([model, provider], 1.0)
        yield family


def _record_provider(model_name: str, provider: str) -> None:
    with _providers_lock:
        _providers[model_name] = provider


def worker_runtime(cfg: RuntimeConfig, detect_threads: int, cores: int | None = None) -> RuntimeConfig:
    """The runtime a worker's sessions use: ``threads`` 0 becomes the cores divided among the worker's detection
    threads (each detection then runs on its own core instead of two detections fighting over all of them)."""
    if cfg.threads != 0 or detect_threads <= 1:
        return cfg
    return cfg.model_copy(update={"threads": max(1, (cores or os.cpu_count() or 1) // detect_threads)})


def apply_opencv_threads(cfg: RuntimeConfig) -> None:
    """OpenCV's thread pool for this process as ``opencv_threads`` says (0: left at OpenCV's default)."""
    if cfg.opencv_threads > 0:
        cv2.setNumThreads(cfg.opencv_threads)


def choose_providers(cfg: RuntimeConfig) -> list[str]:
    available = set(ort.get_available_providers())
    chosen = [ORT_NAMES[p] for p in cfg.providers if ORT_NAMES[p] in available]
    if not chosen:
        raise ModelError(f"none of the configured providers {cfg.providers} is available; "
                         f"this onnxruntime offers {sorted(available)}")
    return chosen


def create_session(model: bytes | str | os.PathLike[str], cfg: RuntimeConfig, model_name: str) -> ort.InferenceSession:
    """An inference session on the first available configured provider, logged and exported."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = cfg.threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.spin else "0")
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else os.fspath(model)
    try:
        session = ort.InferenceSession(source, opts, providers=choose_providers(cfg))
    except (RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph) as exc:
        raise ModelError(f"cannot load model {model_name}: {exc}") from exc
    used = SHORT_NAMES.get(session.get_providers()[0], session.get_providers()[0])
    _record_provider(model_name, used)
    if cfg.require_provider is not None and used != cfg.require_provider:
        raise ModelError(f"model {model_name} runs on {used}, but runtime.require_provider is "
                         f"{cfg.require_provider} (available here: {', '.join(ort.get_available_providers())})")
    if used != cfg.providers[0] and ORT_NAMES[cfg.providers[0]] in ort.get_available_providers():
        log.warning("model %s fell back to %s: %s is installed but did not load (configured preference: %s)",
                    model_name, used, cfg.providers[0], cfg.providers)
    elif used != cfg.providers[0]:
        log.info("model %s runs on %s (%s is not in this onnxruntime build; configured preference: %s)",
                 model_name, used, cfg.providers[0], cfg.providers)
    else:
        log.info("model %s runs on %s", model_name, used)
    return session


def session_provider(session: ort.InferenceSession) -> str:
    first = session.get_providers()[0]
    return SHORT_NAMES.get(first, first)
