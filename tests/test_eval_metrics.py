"""The metric functions behind `argusnet eval`, on hand-made numbers."""

import numpy as np
import pytest

from evaluation.detect import Annotated, average_precision, match_image
from evaluation.verify import best_threshold, roc_auc, tar_at_far


def test_auc_perfect_random_and_inverted():
    labels = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5


def test_best_threshold_separates():
    scores = np.array([0.95, 0.9, 0.85, 0.4, 0.3, 0.88])
    labels = np.array([True, True, True, False, False, False])
    threshold, accuracy = best_threshold(scores, labels)
    assert accuracy == pytest.approx(5 / 6)
    assert 0.4 < threshold <= 0.85


def test_tar_at_far():
    neg = np.linspace(0.0, 0.5, 100)
    pos = np.array([0.3, 0.6, 0.7, 0.8])
    scores, labels = np.r_[pos, neg], np.r_[np.ones(4, bool), np.zeros(100, bool)]
    assert tar_at_far(scores, labels, 0.01) == pytest.approx(0.75)  # one negative may pass: threshold ~0.495
    assert tar_at_far(scores, labels, 0.5) == 1.0


def test_matching_and_ap():
    gt = Annotated(path=None, boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                   ignore=np.array([[50, 50, 60, 60]], np.float32))
    dets = np.array([[0, 0, 10, 11], [1, 1, 11, 11], [50, 50, 60, 60], [80, 80, 90, 90]], np.float32)
    marks, total = match_image(gt, dets, np.array([0.9, 0.8, 0.7, 0.6], np.float32))
    assert total == 2
    assert marks == [(pytest.approx(0.9), True), (pytest.approx(0.8), False), (pytest.approx(0.6), False)]
    assert average_precision([(0.9, True), (0.8, True)], 2) == pytest.approx(1.0)
    assert average_precision([(0.9, False), (0.8, True)], 2) == pytest.approx(0.25)
