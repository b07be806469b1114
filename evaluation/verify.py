"""`argusnet eval verify`: 1:1 verification on labelled pairs: ROC AUC, calibrated threshold, TAR@FAR."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from evaluation.common import embed_photos, require_file, resolve
from gpu_worker.engine import Engine
from shared.errors import InputError

TRUE_WORDS = {"yes", "true", "1", "same"}
FALSE_WORDS = {"no", "false", "0", "different"}
FARS = ("0.01", "0.001")


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool


def read_pairs(csv_path: Path, images_dir: Path) -> list[Pair]:
    """Pairs from a CSV with columns file_x, file_y, Decision (Yes/No), as deepface's master.csv."""
    require_file(csv_path, "pairs CSV")
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"file_x", "file_y", "Decision"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{csv_path}: missing column(s) {sorted(missing)}; expected file_x,file_y,Decision")
        pairs = []
        for line, row in enumerate(reader, start=2):
            word = (row["Decision"] or "").strip().lower()
            if word not in TRUE_WORDS | FALSE_WORDS:
                raise InputError(f"{csv_path}:{line}: Decision must be Yes or No, got {row['Decision']!r}")
            pairs.append(Pair(resolve(images_dir, row["file_x"]), resolve(images_dir, row["file_y"]), word in TRUE_WORDS))
    if not pairs:
        raise InputError(f"{csv_path}: no pairs")
    return pairs


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half)."""
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy): the middle of the widest interval of thresholds with the best accuracy."""
    cuts = np.unique(scores)
    candidates = np.concatenate([[cuts[0] - 1e-3], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1e-3]])
    acc = np.array([np.mean((scores >= t) == labels) for t in candidates])
    best = np.flatnonzero(acc == acc.max())
    # consecutive best candidates form an interval; take the middle of the first longest run
    runs = np.split(best, np.flatnonzero(np.diff(best) != 1) + 1)
    run = max(runs, key=len)
    return float(candidates[run[len(run) // 2]]), float(acc.max())


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """True accept rate at the lowest threshold whose false accept rate is <= far."""
    neg = np.sort(scores[~labels])[::-1]
    allowed = int(np.floor(far * len(neg)))
    threshold = neg[allowed] if allowed < len(neg) else -np.inf
    return float(np.mean(scores[labels] > threshold))


def run_verify(engine: Engine, pairs_csv: Path, images_dir: Path | None = None) -> dict:
    pairs = read_pairs(pairs_csv, images_dir or pairs_csv.parent)
    photos = embed_photos(engine, [p.a for p in pairs] + [p.b for p in pairs], "verify")
    scores, labels = [], []
    for pair in pairs:
        va, vb = photos.vectors.get(str(pair.a)), photos.vectors.get(str(pair.b))
        scores.append(float(va @ vb) if va is not None and vb is not None else -1.0)
        labels.append(pair.same)
    s, y = np.array(scores), np.array(labels, dtype=bool)
    threshold, accuracy = best_threshold(s, y)
    return {
        "pairs": len(pairs), "positives": int(y.sum()), "negatives": int((~y).sum()),
        "failed_detections": len(photos.failed), "failed_photos": sorted(photos.failed),
        "auc": roc_auc(s, y), "threshold": threshold, "accuracy": accuracy,
        "tar_at_far": {far: tar_at_far(s, y, float(far)) for far in FARS},
        "model": engine.embedder.name, "detector": engine.detector.name,
    }
