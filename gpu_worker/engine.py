"""The recognition engine: detect -> align -> embed -> search, for photos and frames."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from gpu_worker.align import ARCFACE_112, AlignTemplate, align_faces
from gpu_worker.config import EngineSettings
from gpu_worker.detect import build_detector
from gpu_worker.detect.base import Detector
from gpu_worker.embed import build_embedder
from gpu_worker.embed.base import Embedder
from gpu_worker.quality import (
    FaceQuality,
    check_enrolment_quality,
    check_single_face,
    face_quality,
)
from identity.decision import DecisionRule, Identity, decide_name
from shared.types import Detections, iou_matrix
from store.types import FaceSample

if TYPE_CHECKING:
    from store.base import PersonGallery

# Faces are stored in the gallery as a generous aligned crop (ArcFace layout, zoomed out) with known landmark
# positions, so that any embedder's template can be cut from it again (`argusnet gallery reembed`).
FINE_PASS_MAX_PX = 48  # a photo's second, full-resolution pass adds only faces smaller than this at the first's scale
STORED_CROP = AlignTemplate("stored_crop_320", 112, ARCFACE_112).scaled("stored_crop_320", 320, zoom=0.6)


@dataclass(frozen=True)
class FaceObservation:
    """One detected and embedded face: box (4,) x1y1x2y2, landmarks (5, 2), embedding (D,)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray
    quality: FaceQuality


@dataclass(frozen=True)
class Identification:
    face: FaceObservation
    identity: Identity


@dataclass(frozen=True)
class EnrolmentFace:
    """A face accepted by the quality gate, ready to be written to a gallery."""

    source: str
    embedding: np.ndarray
    crop: np.ndarray
    crop_landmarks: np.ndarray
    quality: FaceQuality

    def sample(self) -> FaceSample:
        """The face as the store keeps it."""
        return FaceSample(self.embedding, self.crop, self.crop_landmarks, self.source)


def small_extra(found: Detections, fine: Detections, base_scale: float) -> Detections:
    """The faces of ``fine`` (a higher-resolution pass) smaller than FINE_PASS_MAX_PX at ``base_scale`` (the usual
    pass's scale) that overlap none of ``found`` (IoU < 0.3)."""
    if len(fine) == 0:
        return fine
    heights = (fine.boxes[:, 3] - fine.boxes[:, 1]) * base_scale
    overlap = iou_matrix(fine.boxes, found.boxes).max(axis=1) if len(found) else np.zeros(len(fine))
    return fine.select(np.flatnonzero((heights < FINE_PASS_MAX_PX) & (overlap < 0.3)))


def concat(*parts: Detections) -> Detections:
    """The faces of several ``Detections`` of one image, in order."""
    parts = tuple(p for p in parts if len(p)) or parts[:1]
    if len(parts) == 1:
        return parts[0]
    return Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                      np.concatenate([p.landmarks for p in parts]))


class Engine:
    """Holds one detector and one embedder (loaded on first use) configured by ``ArgusConfig``."""

    def __init__(self, cfg: EngineSettings, detector: Detector | None = None, embedder: Embedder | None = None) -> None:
        self.cfg = cfg
        self._detector = detector
        self._embedder = embedder

    @functools.cached_property
    def detector(self) -> Detector:
        return self._detector if self._detector is not None else build_detector(self.cfg.detector, self.cfg.runtime)

    @functools.cached_property
    def embedder(self) -> Embedder:
        return self._embedder if self._embedder is not None else build_embedder(self.cfg.embedder, self.cfg.runtime)

    def warm_up(self) -> None:
        """Load both models and run each once, so the first real frame does not pay for it."""
        blank = np.zeros((64, 64, 3), np.uint8)
        self.detector.detect([blank])
        size = self.embedder.template.size
        self.embedder.embed(np.zeros((1, size, size, 3), np.uint8))

    @functools.cached_property
    def rule(self) -> DecisionRule:
        """The open-set rule: the configured threshold, or the embedder's calibrated one."""
        cfg = self.cfg.recognition
        threshold = self.embedder.threshold if cfg.threshold is None else cfg.threshold
        naming = self.embedder.name_threshold if cfg.name_threshold is None else cfg.name_threshold
        return DecisionRule(threshold, cfg.margin, naming)

    def detect(self, image: np.ndarray, pad_retry: bool = False) -> Detections:
        """Faces in one photo (see ``detect_fine``); with ``pad_retry``, a photo with no face is tried again with
        a border (tightly cropped head shots)."""
        found = self.detect_fine(image)
        side = self.cfg.detector.max_side
        pad_frac = self.cfg.quality.pad_retry
        if len(found) or not pad_retry or pad_frac <= 0:
            return found
        pad = int(round(max(image.shape[:2]) * pad_frac))
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        again = self.detector.detect([padded], side)[0]
        if len(again) == 0:
            return again
        h, w = image.shape[:2]
        boxes = np.clip(again.boxes - pad, 0, [w, h, w, h]).astype(np.float32)
        return Detections(boxes, again.scores, (again.landmarks - pad).astype(np.float32))

    def detect_fine(self, image: np.ndarray) -> Detections:
        """A photo's faces: the pass at ``detector.max_side``, plus the small faces a second pass at the photo's
        own resolution (up to ``detector.photo_max_side``) finds. Only faces smaller than FINE_PASS_MAX_PX at the
        first pass's scale are taken from the second pass: that pass is there for faces too small for the first;
        a large "face" only it sees is not trusted (RetinaFace sees dogs' faces at full resolution)."""
        cfg = self.cfg.detector
        found = self.detector.detect([image])[0]
        longest = max(image.shape[:2])
        if cfg.photo_max_side <= cfg.max_side or longest <= cfg.max_side:
            return found
        fine = self.detector.detect([image], cfg.photo_max_side)[0]
        return concat(found, small_extra(found, fine, cfg.max_side / longest))

    def observe(self, image: np.ndarray, faces: Detections) -> list[FaceObservation]:
        """Align and embed the given faces of ``image``."""
        if len(faces) == 0:
            return []
        chips = align_faces(image, faces.landmarks, self.embedder.template)
        embeddings = self.embedder.embed(chips)
        return [FaceObservation(faces.boxes[i], float(faces.scores[i]), faces.landmarks[i], embeddings[i],
                                face_quality(faces.boxes[i], faces.landmarks[i], chips[i])) for i in range(len(faces))]

    def analyse(self, image: np.ndarray, pad_retry: bool = True) -> list[FaceObservation]:
        return self.observe(image, self.detect(image, pad_retry=pad_retry))

    def identify(self, image: np.ndarray, gallery: "PersonGallery") -> list[Identification]:
        """Every face in ``image`` with its open-set identity against ``gallery``."""
        faces = self.analyse(image)
        if not faces:
            return []
        hits = gallery.search(np.stack([f.embedding for f in faces]), self.cfg.recognition.top_k)
        return [Identification(f, decide_name(h, self.rule)) for f, h in zip(faces, hits)]

    def enrolment_face(self, image: np.ndarray, source: str) -> EnrolmentFace:
        """The single face of an enrolment photo, or ``FaceQualityError`` saying why the photo is refused."""
        face = check_single_face(self.detect(image, pad_retry=True), source)
        observation = self.observe(image, face)[0]
        check_enrolment_quality(observation.quality, self.cfg.quality, source)
        crop = align_faces(image, face.landmarks, STORED_CROP)[0]
        return EnrolmentFace(source, observation.embedding, crop, STORED_CROP.points.copy(), observation.quality)
