import numpy as np
import pytest

from gpu_worker.detect.retinaface import RetinaFaceDetector, anchors_for, nms
from shared.images import read_image
from shared.types import Detections
from tests.conftest import require_data


@pytest.fixture(scope="module")
def detector(engine):
    return engine.detector


def test_anchor_count_matches_network_output(detector):
    batch = np.zeros((1, 3, 480, 640), np.float32)
    loc, conf, lms = detector.session.run(None, {detector.input_name: batch})
    assert anchors_for(480, 640).shape == (loc.shape[1], 4)
    assert conf.shape[1] == lms.shape[1] == loc.shape[1]


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.4, 10).tolist() == [1, 2]
    assert nms(boxes, scores, 0.4, 1).tolist() == [1]


def test_finds_the_six_faces_of_multiface(detector, config):
    image = read_image(require_data("facenet-pytorch", "multiface.jpg"), config.images)
    found = detector.detect([image])[0]
    assert isinstance(found, Detections) and len(found) == 6
    h, w = image.shape[:2]
    assert np.all(found.boxes[:, 2] <= w) and np.all(found.boxes[:, 3] <= h)
    # landmarks lie inside their boxes, eyes above the mouth
    assert np.all(found.landmarks[..., 0] >= found.boxes[:, None, 0] - 2)
    assert np.all(found.landmarks[:, :2, 1].mean(1) < found.landmarks[:, 3:, 1].mean(1))


def test_batch_gives_the_same_faces_as_single_images(detector, config):
    a = read_image(require_data("facenet-pytorch", "multiface.jpg"), config.images)
    b = read_image(require_data("dlib", "faces", "2008_002506.jpg"), config.images)
    batch = detector.detect([a, b])
    for image, got in zip((a, b), batch):
        alone = detector.detect([image])[0]
        assert len(alone) == len(got)
        np.testing.assert_allclose(np.sort(alone.boxes, 0), np.sort(got.boxes, 0), atol=1.0)


def test_no_face_in_dogs_or_blank(detector, config):
    dogs = read_image(require_data("dlib", "faces", "dogs.jpg"), config.images)
    blank = np.full((480, 640, 3), 127, np.uint8)
    assert [len(d) for d in detector.detect([dogs, blank])] == [0, 0]


def test_large_images_are_scaled_back_to_original_pixels(detector, config):
    image = read_image(require_data("insightface", "friends-t1.jpg"), config.images)
    small = detector.detect([image[::2, ::2].copy()])[0]
    full = detector.detect([image])[0]
    assert len(small) == len(full) == 6
    np.testing.assert_allclose(np.sort(full.boxes[:, 0]), np.sort(small.boxes[:, 0]) * 2, atol=8)


def test_input_validation_names_shapes(detector):
    with pytest.raises(ValueError, match=r"images\[0\] must have shape \(N, N, 3\), got \(10, 10\)"):
        detector.detect([np.zeros((10, 10), np.uint8)])
    assert detector.detect([]) == []


def test_provider_is_reported(detector):
    assert detector.provider in {"cpu", "cuda"}
    assert isinstance(detector, RetinaFaceDetector)
