"""dlib's ResNet 128-d face descriptor run by ONNX Runtime (CPU or CUDA) from the graph ``dlib_convert`` builds
out of dlib's own ``.dat`` file. Same network, same weights, same name as the ``dlib`` backend, so galleries made
with either work with both (descriptors agree to cosine >= 0.9999, see tests/test_dlib_onnx.py)."""

from __future__ import annotations

import numpy as np

from gpu_worker.embed.base import l2_normalise
from gpu_worker.embed.dlib_convert import INPUT, cached_onnx
from gpu_worker.embed.dlib_resnet import (
    DLIB_150,
    DLIB_NAME_THRESHOLD,
    DLIB_THRESHOLD,
    MODEL_NAME,
    dlib_model_path,
)
from gpu_worker.runtime import RuntimeConfig, create_session, session_provider
from shared.types import check_array


class DlibOnnxEmbedder:
    """Embedder backend ``dlib`` with ``backend: onnx`` (the default)."""

    name = MODEL_NAME
    dim = 128
    template = DLIB_150
    threshold = DLIB_THRESHOLD
    name_threshold = DLIB_NAME_THRESHOLD

    def __init__(self, runtime: RuntimeConfig, batch_size: int = 32, model: bytes | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.session = create_session(model if model is not None else cached_onnx(dlib_model_path()), runtime,
                                      MODEL_NAME)
        self.provider = session_provider(self.session)

    def raw(self, chips: np.ndarray) -> np.ndarray:
        """dlib's descriptors (not normalised), (N, 128) float32, from (N, 150, 150, 3) uint8 RGB chips."""
        check_array("chips", chips, (None, 150, 150, 3), np.uint8)
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self.session.run(None, {INPUT: chips[i:i + self.batch_size].astype(np.float32)})[0]
               for i in range(0, len(chips), self.batch_size)]
        return np.concatenate(out).astype(np.float32)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return l2_normalise(self.raw(chips))
