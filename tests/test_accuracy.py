"""Accuracy on real faces from ../shared/data through the real `argusnet eval` commands (JSON contract)."""

import json

import pytest

from tests.conftest import require_data

pytestmark = pytest.mark.slow


def run_eval(cli, tmp_path, kind, flag, source):
    out = tmp_path / f"{kind}.json"
    result = cli("eval", kind, flag, source, "--json", out)
    assert result.code == 0, result.err
    return json.loads(out.read_text())


def test_verify_on_deepface_pairs(cli, tmp_path):
    r = run_eval(cli, tmp_path, "verify", "--pairs", require_data("deepface", "master.csv"))
    assert {"pairs", "failed_detections", "auc", "threshold", "accuracy", "tar_at_far", "model"} <= set(r)
    assert set(r["tar_at_far"]) == {"0.01", "0.001"}
    assert r["pairs"] == 300
    assert r["accuracy"] >= 0.99
    assert r["tar_at_far"]["0.01"] >= 0.95
    assert r["auc"] >= 0.99
    assert r["model"] == "dlib_resnet_v1"


@pytest.mark.parametrize("source", [("deepface", "identities.csv"), ("dlib", "johns")])
def test_identify_rank1(cli, tmp_path, source):
    r = run_eval(cli, tmp_path, "identify", "--identities", require_data(*source))
    assert {"identities", "probes", "rank1", "protocol"} <= set(r)
    assert r["probes"] >= 50
    assert r["rank1"] >= 0.95


def test_detect_on_dlib_testing_boxes(cli, tmp_path):
    r = run_eval(cli, tmp_path, "detect", "--boxes", require_data("dlib", "faces", "testing.xml"))
    assert {"ground_truth", "detections", "recall", "precision", "ap50"} <= set(r)
    assert r["ground_truth"] == 25
    assert r["recall"] >= 0.90
    assert r["precision"] >= 0.90
