"""Face embedders, chosen by the ``type`` field of the embedder config."""

from __future__ import annotations

from gpu_worker.embed.base import Embedder
from gpu_worker.embed.config import DlibEmbedderConfig, OnnxEmbedderConfig
from gpu_worker.runtime import RuntimeConfig


def build_embedder(ecfg: DlibEmbedderConfig | OnnxEmbedderConfig, runtime: RuntimeConfig) -> Embedder:
    """The embedder backend named by ``ecfg.type``."""
    if ecfg.type == "dlib" and ecfg.backend == "onnx":
        from gpu_worker.embed.dlib_onnx import DlibOnnxEmbedder

        return DlibOnnxEmbedder(runtime, ecfg.batch_size)
    if ecfg.type == "dlib":
        from gpu_worker.embed.dlib_resnet import DlibEmbedder

        return DlibEmbedder(jitter=ecfg.jitter)
    if ecfg.type == "onnx":
        from gpu_worker.embed.cards import load_card
        from gpu_worker.embed.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder(load_card(ecfg.card), ecfg.path, runtime, ecfg.batch_size, sha256=ecfg.sha256)
    raise ValueError(f"unknown embedder type {ecfg.type!r}")
