"""Face quality from the five landmarks and the aligned chip, and the enrolment quality gate."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from shared.errors import FaceQualityError
from shared.schema import Section
from shared.types import Detections, check_array


class QualityConfig(Section):
    min_face_px: int = Field(default=40, ge=8, le=4096,
                             description="Enrolment: the face box's shorter side must be at least this many pixels.")
    min_sharpness: float = Field(default=15.0, ge=0.0, le=10_000.0,
                                 description="Enrolment: variance of the Laplacian of the aligned grey chip.")
    max_yaw: float = Field(default=0.45, gt=0.0, le=1.0,
                           description="Enrolment: nose offset from the eye mid-point over the eye distance (0 = "
                           "frontal); larger means turned further.")
    max_pitch: float = Field(default=0.45, gt=0.0, le=1.0,
                             description="Enrolment: deviation of the nose's vertical position between eyes and "
                             "mouth from its frontal value, as a fraction of that distance.")
    pad_retry: float = Field(default=0.5, ge=0.0, le=2.0,
                             description="When a photo shows no face, try again with this much border added "
                             "(tight head-shot crops); 0 disables.")


FRONTAL_NOSE_RATIO = 0.49  # nose height between eye line and mouth line on a frontal face (ArcFace template)
SHARPNESS_SIDE = 112  # chips are compared at one size so sharpness is comparable across templates
COMPANION_FACE_FRACTION = 0.35  # faces smaller than this fraction of the largest are background, not "two faces"
PERFECT_SHARPNESS = 100.0  # sharpness at or above which a chip counts as fully sharp in FaceQuality.score()


@dataclass(frozen=True)
class FaceQuality:
    """size_px: shorter box side; sharpness: Laplacian variance of the grey chip at 112 px;
    yaw / pitch: 0 for a frontal face, growing as the head turns (see QualityConfig)."""

    size_px: float
    sharpness: float
    yaw: float
    pitch: float

    def score(self) -> float:
        """One number for ranking observations of a face: bigger, sharper and more frontal is better."""
        size = min(self.size_px / 112.0, 1.0)
        sharp = min(self.sharpness / PERFECT_SHARPNESS, 1.0)
        pose = max(0.0, 1.0 - 2.0 * (self.yaw + self.pitch))
        return float(size * (0.5 + 0.5 * sharp) * pose)


@dataclass(frozen=True)
class Pose:
    """How turned a face is, from its landmarks: 0 is frontal. ``yaw``: the nose's sideways offset from the eyes'
    midline in eye distances; ``pitch``: how far the nose's height between eyes and mouth is from a frontal face's."""

    yaw: float
    pitch: float


def pose_from_landmarks(landmarks: np.ndarray) -> Pose:
    """Yaw and pitch proxies from (5, 2) landmarks, invariant to in-plane rotation and scale."""
    check_array("landmarks", landmarks, (5, 2))
    pts = landmarks.astype(np.float64)
    eye_l, eye_r, nose, mouth_l, mouth_r = pts
    axis = eye_r - eye_l
    eye_dist = float(np.hypot(*axis))
    if eye_dist < 1e-6:
        return Pose(1.0, 1.0)
    cos, sin = axis / eye_dist
    rot = np.array([[cos, sin], [-sin, cos]])
    eye_mid = (eye_l + eye_r) / 2
    n = rot @ (nose - eye_mid)
    m = rot @ ((mouth_l + mouth_r) / 2 - eye_mid)
    yaw = abs(n[0]) / eye_dist
    pitch = abs(n[1] / m[1] - FRONTAL_NOSE_RATIO) if m[1] > 1e-6 else 1.0
    return Pose(float(yaw), float(pitch))


def sharpness(chip: np.ndarray) -> float:
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    if grey.shape[0] != SHARPNESS_SIDE:
        grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_LINEAR)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def face_quality(box: np.ndarray, landmarks: np.ndarray, chip: np.ndarray) -> FaceQuality:
    pose = pose_from_landmarks(landmarks)
    size = float(min(box[2] - box[0], box[3] - box[1]))
    return FaceQuality(size_px=size, sharpness=sharpness(chip), yaw=pose.yaw, pitch=pose.pitch)


def main_faces(detections: Detections) -> Detections:
    """The faces that count for "exactly one face": all but small background faces."""
    if len(detections) <= 1:
        return detections
    sides = np.minimum(detections.boxes[:, 2] - detections.boxes[:, 0], detections.boxes[:, 3] - detections.boxes[:, 1])
    return detections.select(np.flatnonzero(sides >= COMPANION_FACE_FRACTION * sides.max()))


def check_single_face(detections: Detections, source: str) -> Detections:
    faces = main_faces(detections)
    if len(faces) == 0:
        raise FaceQualityError("no_face", f"{source}: no face found")
    if len(faces) > 1:
        raise FaceQualityError("multiple_faces", f"{source}: {len(faces)} faces found, enrolment needs exactly one "
                               "(crop the photo to the person)")
    return faces


def check_enrolment_quality(quality: FaceQuality, cfg: QualityConfig, source: str) -> None:
    """Raise ``FaceQualityError`` with a reason when a face is too small, turned or blurred for enrolment."""
    if quality.size_px < cfg.min_face_px:
        raise FaceQualityError("too_small", f"{source}: face is {quality.size_px:.0f} px, enrolment needs at least "
                               f"{cfg.min_face_px} px (quality.min_face_px)")
    if quality.yaw > cfg.max_yaw:
        raise FaceQualityError("turned", f"{source}: face is turned sideways (yaw {quality.yaw:.2f} > "
                               f"quality.max_yaw {cfg.max_yaw})")
    if quality.pitch > cfg.max_pitch:
        raise FaceQualityError("tilted", f"{source}: face looks too far up or down (pitch {quality.pitch:.2f} > "
                               f"quality.max_pitch {cfg.max_pitch})")
    if quality.sharpness < cfg.min_sharpness:
        raise FaceQualityError("blurred", f"{source}: face is too blurred (sharpness {quality.sharpness:.1f} < "
                               f"quality.min_sharpness {cfg.min_sharpness})")
