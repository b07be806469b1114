"""`argusnet eval small-faces` (issue 15): faces shrunk to H px in a camera-sized frame, on real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.small_faces import degrade, identities, parse_frame, parse_heights
from evaluation.verify import Pair
from shared.errors import InputError


def test_degrade_puts_a_face_of_the_asked_height_at_the_centre_of_a_grey_frame():
    image = np.zeros((400, 300, 3), np.uint8)
    image[100:300, 50:250] = 255  # the "face": 200 px tall
    out = degrade(image, np.array([50.0, 100.0, 250.0, 300.0]), 40, (1280, 720))
    assert out.shape == (720, 1280, 3)
    bright = np.argwhere(out[:, :, 0] > 200)
    (y0, x0), (y1, x1) = bright.min(axis=0), bright.max(axis=0)
    assert 38 <= y1 - y0 + 1 <= 42 and abs((y0 + y1) / 2 - 360) <= 2 and abs((x0 + x1) / 2 - 640) <= 2
    assert abs(int(out[10, 10, 0]) - 128) <= 3  # grey around, through JPEG q75


def test_options_are_checked_and_identities_follow_the_same_pairs():
    assert parse_heights("56,20,40") == [20, 40, 56] and parse_frame("1280x720") == (1280, 720)
    for bad in ("", "a,b", "4", "5000"):
        with pytest.raises(InputError, match="--heights"):
            parse_heights(bad)
    with pytest.raises(InputError, match="--frame"):
        parse_frame("1280")
    who = identities([Pair("a", "b", True), Pair("b", "c", True), Pair("a", "d", False), Pair("d", "e", True)])
    assert who["a"] == who["b"] == who["c"] != who["d"] == who["e"]


@pytest.mark.data
@pytest.mark.slow
def test_small_faces_on_master_csv(data_dir, cli, tmp_path):
    out = tmp_path / "small.json"
    r = cli("eval", "small-faces", "--pairs", data_dir / "deepface" / "master.csv", "--heights", "20,56,112",
            "--json", out)
    assert r.code == 0, r.err
    result = json.loads(out.read_text())
    rows = result["heights"]
    assert set(rows) == {"20", "56", "112"} and result["frame"] == "1280x720"
    for row in rows.values():
        assert {"detected", "pairs", "accuracy", "tar_at_far", "wrong_names", "named", "abstained"} <= set(row)
        assert "0.01" in row["tar_at_far"]
    assert rows["20"]["detected"] < rows["56"]["detected"] <= rows["112"]["detected"] == rows["112"]["photos"]
    assert rows["112"]["tar_at_far"]["0.01"] >= 0.95 and rows["112"]["wrong_names"] == 0
    assert result["detector"]["max_side"] == 640
