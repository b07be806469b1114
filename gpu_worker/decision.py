"""The open-set decision: a name only when the best person is similar enough and clearly ahead of the next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from pydantic import Field

from shared.schema import Section


class RecognitionConfig(Section):
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="Cosine similarity needed to name a face. Empty = the embedder's "
                                    "calibrated default (its model card); calibrate your own with `argusnet eval "
                                    "verify` (its `threshold` key) for your cameras.")
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
    """threshold: cosine similarity needed for a name; margin: lead needed over the best other person."""

    threshold: float
    margin: float


def decide(hits: Sequence[Hit], cfg: DecisionRule) -> Identity:
    """Apply threshold and margin to persons ranked by similarity (each person once, best first)."""
    if not hits:
        return Identity(None, None, None, None)
    best = hits[0]
    margin = best.similarity - hits[1].similarity if len(hits) > 1 else None
    accepted = best.similarity >= cfg.threshold and (margin is None or margin >= cfg.margin)
    return Identity(best.name if accepted else None, best.name, float(best.similarity),
                    None if margin is None else float(margin))
