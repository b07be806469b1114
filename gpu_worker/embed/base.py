"""The embedder interface: aligned face chips in, L2-normalised float32 embeddings out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from gpu_worker.align import AlignTemplate


@runtime_checkable
class Embedder(Protocol):
    """A face embedding model.

    ``name`` identifies the model (a gallery records it and refuses embeddings of another), ``dim`` is the
    embedding size, ``template`` says how faces must be aligned for it and ``threshold`` is its calibrated
    default cosine similarity for a match of one face (used when the configuration sets none); ``name_threshold``
    the similarity a track's template or a photo needs for a name (`identity.decision`).
    """

    name: str
    dim: int
    template: AlignTemplate
    provider: str
    threshold: float
    name_threshold: float

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB chips aligned to ``template`` -> (N, dim) float32, unit L2 norm."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
