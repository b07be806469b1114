"""`argusnet eval openset`, photo part: the 1:N open-set protocol on labelled photos (as NIST FRVT 1:N reports it).

Each identity's photos (sorted by path) are split: the even-numbered ones are enrolled, the odd-numbered ones are
its mated probes (an identity with one photo is enrolled only). Galleries:

- ``"1"``: each identity enrolled alone in turn; its mated probes against it, every photo of every other identity
  as a non-mated probe;
- ``"5"``: five identities in turn (a window sliding over the sorted identities, wrapping); likewise;
- ``"all"``: every identity but one, the one left out in turn (so that there are non-mated probes): the others'
  probes are mated, every photo of the one left out is non-mated.

A search is named when the open-set decision (`identity.decision.decide_name`, the rule for a photo) gives
a name. FPIR: non-mated searches named; FNIR: mated searches not named as their own identity. ``fnir_at_fpir``:
FNIR when the threshold on the best person's similarity is set so that at most that fraction of non-mated searches
is named (the best-ranked person must still be the right one, with the margin rule as configured).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.common import embed_photos
from evaluation.identify import Ranked, rank_persons, read_identities
from gpu_worker.engine import Engine
from identity.decision import DecisionRule, decide_name

FPIR_POINTS = ("0.01", "0.001")
SIZES = ("1", "5", "all")


@dataclass(frozen=True)
class Search:
    """One probe against one gallery: ``truth`` the probe's identity when it is enrolled (mated), else None."""

    truth: str | None
    ranked: tuple[Ranked, ...]


@dataclass(frozen=True)
class LabelledSet:
    enrolled: dict[str, np.ndarray]  # identity -> (n, d) enrolled embeddings
    probes: dict[str, np.ndarray]  # identity -> (m, d) mated probes
    every: dict[str, np.ndarray]  # identity -> all its embeddings (non-mated probes when not enrolled)


def split(engine: Engine, source: Path) -> tuple[LabelledSet, list[str]]:
    """Embed every photo of one identities file or folder, split per identity; the photos with no usable face."""
    rows = read_identities(source, None)
    photos = embed_photos(engine, [p for _, p in rows], "openset photos")
    by_person: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for who, photo in rows:
        if str(photo) in photos.vectors:
            by_person[who].append((str(photo), photos.vectors[str(photo)]))
    enrolled, probes, every = {}, {}, {}
    dim = engine.embedder.dim
    for who, items in sorted(by_person.items()):
        vectors = np.stack([v for _, v in sorted(dict(items).items())])
        enrolled[who], probes[who], every[who] = vectors[0::2], vectors[1::2].reshape(-1, dim), vectors
    return LabelledSet(enrolled, probes, every), sorted(photos.failed)


def galleries(identities: list[str], size: str) -> list[list[str]]:
    n = len(identities)
    if size == "all":
        return [identities[:i] + identities[i + 1:] for i in range(n)] if n > 1 else []
    k = int(size)
    if k >= n:
        return []
    return [[identities[(i + j) % n] for j in range(k)] for i in range(n)]


def searches(data: LabelledSet, gallery: list[str]) -> list[Search]:
    names = np.array([who for who in gallery for _ in range(len(data.enrolled[who]))])
    faces = np.concatenate([data.enrolled[who] for who in gallery])
    out = []
    inside = set(gallery)
    for who, vectors in data.every.items():
        probes = data.probes[who] if who in inside else vectors
        for probe in probes:
            ranked = tuple(rank_persons(names, faces @ probe))
            out.append(Search(who if who in inside else None, ranked))
    return out


def rates(runs: list[Search], rule: DecisionRule) -> dict:
    mated = [s for s in runs if s.truth is not None]
    non_mated = [s for s in runs if s.truth is None]
    named_non_mated = [s for s in non_mated if decide_name(s.ranked, rule).name is not None]
    missed = [s for s in mated if decide_name(s.ranked, rule).name != s.truth]
    out = {"mated": len(mated), "non_mated": len(non_mated),
           "fpir": len(named_non_mated) / len(non_mated) if non_mated else None,
           "fnir": len(missed) / len(mated) if mated else None,
           "non_mated_named": len(named_non_mated), "mated_missed": len(missed),
           "fnir_at_fpir": {}}
    scores = np.sort(np.array([s.ranked[0].similarity for s in non_mated]))[::-1]
    for point in FPIR_POINTS:
        if not len(scores):
            out["fnir_at_fpir"][point] = None  # no non-mated search: no threshold to set
            continue
        allowed = int(np.floor(float(point) * len(scores)))
        # the threshold names at most `allowed` non-mated searches: just above the (allowed+1)-th best score
        threshold = float(np.nextafter(scores[allowed], 2.0)) if allowed < len(scores) else -1.0
        at = DecisionRule(max(threshold, -1.0), rule.margin)
        out["fnir_at_fpir"][point] = (sum(decide_name(s.ranked, at).name != s.truth for s in mated) / len(mated)
                                      if mated else None)
    return out


def run_photos(engine: Engine, sources: list[Path]) -> dict:
    """Every gallery size over each source apart (``by_source``) and pooled (the size keys)."""
    pooled: dict[str, list[Search]] = {size: [] for size in SIZES}
    out: dict = {"threshold": engine.rule.threshold, "name_threshold": engine.rule.naming.threshold,
                 "margin": engine.rule.margin, "by_source": {}}
    for source in sources:
        data, failed = split(engine, source)
        identities = sorted(data.enrolled)
        row: dict = {"identities": len(identities), "failed_photos": failed}
        for size in SIZES:
            runs = [s for gallery in galleries(identities, size) for s in searches(data, gallery)]
            row[size] = rates(runs, engine.rule) if runs else None
            pooled[size] += runs
        out["by_source"][str(source)] = row
    for size in SIZES:
        out[size] = rates(pooled[size], engine.rule) if pooled[size] else None
    return out
