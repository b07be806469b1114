import cv2
import numpy as np
import pytest

from gpu_worker.align import ARCFACE_112, TEMPLATES, align_faces, similarity_transform
from gpu_worker.quality import (
    FaceQuality,
    QualityConfig,
    check_enrolment_quality,
    check_single_face,
    pose_from_landmarks,
)
from identity.decision import DecisionRule, decide, decide_name, track_template, without_contradicted
from shared.errors import FaceQualityError
from shared.types import Detections


def test_similarity_transform_recovers_rotation_scale_shift():
    angle, scale, shift = np.deg2rad(20), 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = ARCFACE_112 @ rot.T + shift
    m = similarity_transform(ARCFACE_112, dst.astype(np.float32))
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-4)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-3)


def test_align_undoes_a_rotation():
    image = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(image, (70, 80), 6, (255, 0, 0), -1)  # marks the first landmark
    landmarks = (ARCFACE_112 + 40).astype(np.float32)
    rot = cv2.getRotationMatrix2D((100, 100), 30, 1.0)
    rotated = cv2.warpAffine(image, rot, (200, 200))
    rotated_lms = (np.c_[landmarks, np.ones(5)] @ rot.T).astype(np.float32)
    a = align_faces(image, landmarks[None], TEMPLATES["arcface_112"])[0]
    b = align_faces(rotated, rotated_lms[None], TEMPLATES["arcface_112"])[0]
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_align_validates_shapes():
    with pytest.raises(ValueError, match=r"landmarks must have shape \(N, 5, 2\), got \(3, 4, 2\)"):
        align_faces(np.zeros((10, 10, 3), np.uint8), np.zeros((3, 4, 2), np.float32), TEMPLATES["arcface_112"])


def test_pose_is_zero_for_the_frontal_template_and_grows_when_turned():
    pose = pose_from_landmarks(ARCFACE_112)
    yaw, pitch = pose.yaw, pose.pitch
    assert yaw < 0.02 and pitch < 0.02
    turned = ARCFACE_112.copy()
    turned[2, 0] += 15  # nose far towards one eye
    assert pose_from_landmarks(turned).yaw > 0.4
    rotated = ARCFACE_112 @ np.array([[0.0, -1.0], [1.0, 0.0]]).T  # in-plane rotation changes nothing
    assert pose_from_landmarks(rotated.astype(np.float32)).yaw < 0.02


def _dets(boxes):
    boxes = np.array(boxes, np.float32)
    return Detections(boxes, np.ones(len(boxes), np.float32), np.zeros((len(boxes), 5, 2), np.float32))


def test_single_face_rule():
    with pytest.raises(FaceQualityError) as err:
        check_single_face(Detections.empty(), "x.jpg")
    assert err.value.reason == "no_face"
    with pytest.raises(FaceQualityError) as err:
        check_single_face(_dets([[0, 0, 100, 100], [200, 0, 290, 90]]), "x.jpg")
    assert err.value.reason == "multiple_faces" and "2 faces" in str(err.value)
    # a small face far in the background does not make a photo a group photo
    assert len(check_single_face(_dets([[0, 0, 200, 200], [300, 0, 320, 20]]), "x.jpg")) == 1


@pytest.mark.parametrize("quality, reason", [
    (FaceQuality(size_px=20, sharpness=100, yaw=0, pitch=0), "too_small"),
    (FaceQuality(size_px=200, sharpness=100, yaw=0.9, pitch=0), "turned"),
    (FaceQuality(size_px=200, sharpness=100, yaw=0, pitch=0.9), "tilted"),
    (FaceQuality(size_px=200, sharpness=1, yaw=0, pitch=0), "blurred"),
])
def test_enrolment_gate_reasons(quality, reason):
    with pytest.raises(FaceQualityError) as err:
        check_enrolment_quality(quality, QualityConfig(), "p.jpg")
    assert err.value.reason == reason and "p.jpg" in str(err.value)


class H:
    def __init__(self, name, similarity):
        self.name, self.similarity = name, similarity


def test_open_set_decision():
    cfg = DecisionRule(threshold=0.8, margin=0.05)
    assert decide([H("ann", 0.9), H("bob", 0.7)], cfg).name == "ann"
    below = decide([H("ann", 0.75), H("bob", 0.5)], cfg)
    assert below.name is None and below.candidate == "ann" and below.label == "unknown"
    close = decide([H("ann", 0.9), H("bob", 0.88)], cfg)
    assert close.name is None and close.margin == pytest.approx(0.02)
    only = decide([H("ann", 0.85)], cfg)
    assert only.name == "ann" and only.margin is None
    assert decide([], cfg).name is None


def test_naming_takes_the_stricter_threshold_and_never_a_laxer_one():
    rule = DecisionRule(threshold=0.8, margin=0.05, name_threshold=0.9)
    assert decide([H("ann", 0.85)], rule).name == "ann"  # a vote
    assert decide_name([H("ann", 0.85)], rule).name is None  # not a name
    assert decide_name([H("ann", 0.91), H("bob", 0.5)], rule).name == "ann"
    assert decide_name([H("ann", 0.91), H("bob", 0.88)], rule).name is None  # the margin still holds
    assert DecisionRule(0.8, 0.05, 0.7).naming.threshold == 0.8  # never below the vote threshold
    assert DecisionRule(0.8, 0.05).naming.threshold == 0.8


def test_negative_evidence_removes_the_persons_it_contradicts():
    hits = [H("ann", 0.93), H("bob", 0.90)]
    assert [h.name for h in without_contradicted(hits, {"ann": 0.95})] == ["bob"]
    assert [h.name for h in without_contradicted(hits, {"ann": 0.93})] == ["bob"]  # as similar: not her
    assert [h.name for h in without_contradicted(hits, {"ann": 0.92, "carl": 0.99})] == ["ann", "bob"]


def test_track_template_is_the_mean_of_the_best_faces():
    a, b, c = np.eye(3, dtype=np.float32)
    template = track_template([a, b, c], [0.9, 0.1, 0.8], faces=2)
    assert np.allclose(template, (a + c) / np.sqrt(2.0)) and np.isclose(np.linalg.norm(template), 1.0)
    assert np.allclose(track_template([b], [0.5], faces=3), b)
    with pytest.raises(ValueError, match="as many qualities as embeddings"):
        track_template([a, b], [0.5], faces=2)
    with pytest.raises(ValueError, match="no direction"):
        track_template([a, -a], [0.5, 0.5], faces=2)
