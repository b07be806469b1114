"""The open-set decision: a name only when the best person is similar enough and clearly ahead of the next.

Two thresholds. ``threshold`` judges one face of a track: a face at or above it is a vote for that person (the
track's vote, `identity.voting`). ``name_threshold`` (stricter) judges what names: a track's template (the mean of
its best faces, `track_template`), or a photo (a one-face track). Single faces of strangers in camera streams reach
a stranger-to-person similarity that photos never do (small, blurred, turned faces all look alike to the model);
a template of several faces of one person is closer to that person's faces and no closer to anybody else's.

Negative evidence (faces an operator said are NOT a person, `store.base.NegativeStore`): a face at least as
similar to a person's negative faces as to his own faces is not that person (`without_contradicted`).""" 

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
from pydantic import Field

from shared.schema import Section


class RecognitionConfig(Section):
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="Cosine similarity for one face to count as a vote for a person. "
                                    "Empty = the embedder's calibrated default (its model card); calibrate your own "
                                    "with `argusnet eval verify` (its `threshold` key) for your cameras.")
    name_threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0,
        description="Cosine similarity a track's template (the mean of its best faces) or a photo must reach to be "
        "named. Empty = the embedder's calibrated default (its model card; dlib 0.95: BENCHMARKS.md, `argusnet "
        "eval openset`). Never below `threshold`.")
    template_faces: int = Field(default=3, ge=1, le=20,
                                description="How many of a track's best faces (by quality) make its template.")
    cohort: bool = Field(default=True, description="A track's name must also lead the site's closest visitors "
                         "(strangers seen here before) by `margin`: a stranger who comes back is nearer to his own "
                         "visitor than to an enrolled person he resembles (`identity.naming`).")
    margin: float = Field(default=0.01, ge=0.0, le=2.0,
                          description="A name also needs this lead in similarity over the best other person.")
    top_k: int = Field(default=20, ge=2, le=1000, description="Gallery neighbours looked at per face.")



UNKNOWN = "unknown"


class Hit(Protocol):
    name: str
    similarity: float


@dataclass(frozen=True)
class Identity:
    """name: the decided person or None (unknown); candidate: the best person even when not accepted;
    margin: lead over the best other person (None when the gallery holds one person only)."""

    name: str | None
    candidate: str | None
    similarity: float | None
    margin: float | None

    @property
    def label(self) -> str:
        return self.name if self.name is not None else UNKNOWN


@dataclass(frozen=True)
class DecisionRule:
    """threshold: cosine similarity for one face's vote; margin: lead needed over the best other person;
    name_threshold: similarity a track's template or a photo needs for a name (None: ``threshold``)."""

    threshold: float
    margin: float
    name_threshold: float | None = None

    @property
    def naming(self) -> "DecisionRule":
        """The rule that names (a template, a photo): ``name_threshold`` as its threshold."""
        level = self.threshold if self.name_threshold is None else max(self.threshold, self.name_threshold)
        return DecisionRule(level, self.margin, level)


def decide(hits: Sequence[Hit], cfg: DecisionRule) -> Identity:
    """Apply threshold and margin to persons ranked by similarity (each person once, best first)."""
    if not hits:
        return Identity(None, None, None, None)
    best = hits[0]
    margin = best.similarity - hits[1].similarity if len(hits) > 1 else None
    accepted = best.similarity >= cfg.threshold and (margin is None or margin >= cfg.margin)
    return Identity(best.name if accepted else None, best.name, float(best.similarity),
                    None if margin is None else float(margin))


def decide_name(hits: Sequence[Hit], cfg: DecisionRule) -> Identity:
    """The decision that names: a photo's face, or a track's template (``decide`` at ``cfg.naming``)."""
    return decide(hits, cfg.naming)


def without_contradicted(hits: Sequence[Hit], negatives: Mapping[str, float]) -> list[Hit]:
    """``hits`` less the persons this face is at least as similar to by their negative evidence (``negatives``:
    person -> this face's best similarity to that person's negative faces) as by their own faces."""
    return [h for h in hits if not (h.name in negatives and negatives[h.name] >= h.similarity)]


def track_template(embeddings: Sequence[np.ndarray], qualities: Sequence[float], faces: int) -> np.ndarray:
    """A track's template: the unit-length mean of its ``faces`` best embeddings by quality."""
    if len(embeddings) == 0 or len(embeddings) != len(qualities):
        raise ValueError(f"need as many qualities as embeddings (> 0), got {len(embeddings)} and {len(qualities)}")
    order = np.argsort(-np.asarray(qualities, np.float64), kind="stable")[:faces]
    mean = np.mean(np.stack([np.asarray(embeddings[i], np.float32) for i in order]), axis=0)
    norm = float(np.linalg.norm(mean))
    if not norm > 0:
        raise ValueError("the template of these embeddings has no direction (they cancel out)")
    return (mean / norm).astype(np.float32)
