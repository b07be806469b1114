"""Derive the dlib 150x150 chip template for RetinaFace landmarks (the constants of DLIB_150).

dlib's chips in ../shared/data/dlib/johns were cut by dlib's own get_face_chip; we detect each padded chip
with our RetinaFace detector and average where its five landmarks fall.
Run: .venv/bin/python -m bench.derive_dlib_template
"""

from __future__ import annotations

import glob
import json

import cv2
import numpy as np

from argusnet.config import load_config
from gpu_worker.detect import build_detector
from shared.images import read_image

PAD = 75


def main() -> None:
    cfg = load_config()
    detector = build_detector(cfg.detector, cfg.runtime)
    points = []
    for path in sorted(glob.glob("../shared/data/dlib/johns/*/*.jpg")):
        chip = read_image(path, cfg.images)
        padded = cv2.copyMakeBorder(chip, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        faces = detector.detect([padded])[0].largest()
        if len(faces):
            points.append(faces.landmarks[0] - PAD)
    stack = np.array(points)
    print(json.dumps({"chips": len(stack), "mean": np.round(stack.mean(0), 2).tolist(),
                      "std": np.round(stack.std(0), 2).tolist()}))


if __name__ == "__main__":
    main()
