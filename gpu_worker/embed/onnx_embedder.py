"""A face embedder for any ONNX file described by a model card (ArcFace, VGGFace2, a user's own card).

The file is read once, its sha256 checked against the card (or an explicit hash), and the session created
from those very bytes, so the file checked is the file run. The model's input and output shapes are checked
against the card before the first face is embedded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gpu_worker.embed.base import l2_normalise
from gpu_worker.embed.cards import ModelCard
from gpu_worker.embed.fetch import expected_sha256
from gpu_worker.runtime import RuntimeConfig, create_session, session_provider
from shared.errors import ModelError
from shared.types import check_array


def read_verified(card: ModelCard, path: str | os.PathLike[str], sha256: str | None = None) -> bytes:
    """The bytes of the model file, after checking their sha256 (``ModelError`` naming expected and actual)."""
    want = expected_sha256(card, sha256)
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file for card {card.name} not found: {p}"
                         + (f" (it can be downloaded from {card.url})" if card.url else ""))
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {p}: {exc}") from exc
    have = hashlib.sha256(data).hexdigest()
    if have != want:
        raise ModelError(f"model file {p} has sha256 {have}, but card {card.name} expects {want}: "
                         "wrong or corrupted file")
    return data


def expected_input_shape(card: ModelCard) -> tuple[int | None, ...]:
    s = card.input_size
    return (None, 3, s, s) if card.layout == "NCHW" else (None, s, s, 3)


def check_model_io(session: ort.InferenceSession, card: ModelCard) -> int | None:
    """Check one float input of the card's shape and an (N, output_dim) output; returns a fixed batch size
    if the model has one (else ``None``). Symbolic dimensions are accepted."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"card {card.name} expects a model with one input, got {[i.name for i in inputs]}")
    spec, want = inputs[0], expected_input_shape(card)
    if spec.type != "tensor(float)":
        raise ModelError(f"card {card.name} expects a float32 input, model input {spec.name!r} is {spec.type}")
    if len(spec.shape) != 4 or any(isinstance(a, int) and e is not None and a != e for a, e in zip(spec.shape, want)):
        raise ModelError(f"card {card.name} expects input shape {_fmt(want)} ({card.layout}), "
                         f"model input {spec.name!r} has shape {_fmt(spec.shape)}")
    out = session.get_outputs()[0]
    if len(out.shape) != 2 or (isinstance(out.shape[1], int) and out.shape[1] != card.output_dim):
        raise ModelError(f"card {card.name} expects output shape (N, {card.output_dim}), "
                         f"model output {out.name!r} has shape {_fmt(out.shape)}")
    batch = spec.shape[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else "N" if d is None else str(d) for d in shape) + ")"


class OnnxEmbedder:
    """Embedder backend ``onnx``: aligned uint8 RGB chips -> L2-normalised float32 embeddings per the card."""

    def __init__(self, card: ModelCard, path: str | os.PathLike[str], runtime_cfg: RuntimeConfig,
                 batch_size: int = 32, sha256: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.card = card
        self.name = card.name
        self.dim = card.output_dim
        self.template = card.align_template
        self.threshold = card.threshold
        self.name_threshold = card.threshold if card.name_threshold is None else card.name_threshold
        self.session = create_session(read_verified(card, path, sha256), runtime_cfg, card.name)
        self.provider = session_provider(self.session)
        fixed = check_model_io(self.session, card)
        self.batch_size = batch_size if fixed is None else min(batch_size, fixed)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self._mean = np.array(card.mean, np.float32)
        self._std = np.array(card.std, np.float32)

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> the network's float32 input: channel order, (x - mean) / std, layout."""
        x = (chips[..., ::-1] if self.card.color_order == "BGR" else chips).astype(np.float32)
        np.subtract(x, self._mean, out=x)
        np.divide(x, self._std, out=x)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.card.layout == "NCHW" else x

    def raw(self, chips: np.ndarray) -> np.ndarray:
        """The network's own (N, dim) float32 outputs, not normalised, computed ``batch_size`` chips at a time."""
        size = self.template.size
        check_array("chips", chips, (None, size, size, 3), np.uint8)
        out = np.empty((len(chips), self.dim), np.float32)
        for start in range(0, len(chips), self.batch_size):
            part = chips[start:start + self.batch_size]
            y = np.asarray(self.session.run([self._output], {self._input: self.preprocess(part)})[0])
            if y.shape != (len(part), self.dim):
                raise ModelError(f"model {self.name} returned shape {y.shape} for {len(part)} chips, "
                                 f"expected {(len(part), self.dim)}")
            out[start:start + len(part)] = y
        if not np.isfinite(out).all():
            raise ModelError(f"model {self.name} returned non-finite embeddings")
        return out

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB chips aligned to ``template`` -> (N, dim) float32, unit L2 norm."""
        return l2_normalise(self.raw(chips))
