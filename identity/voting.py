"""Identity per track: a quality-weighted vote over its observations, with hysteresis.

A track is named after ``confirm_votes`` observations for one person whose weighted support beats the "nobody"
votes, or at once by one observation ``instant_lead`` above the decision threshold. Once named it is renamed only
when another person's support reaches ``rename_ratio`` times the current name's (with ``confirm_votes``
observations); "unknown" observations never take a name away (a name flickering to unknown and back is what users
complain about). Every naming and renaming is put to ``confirm`` (the caller's check of the track as a whole: its
template against the stricter naming threshold, `identity.decision`): a vote that it refuses waits for more
faces. ``withdraw`` takes a name away for good (an operator said "not this person")."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from pydantic import Field

from shared.schema import Section



class VotingConfig(Section):
    confirm_votes: int = Field(default=2, ge=1, le=100,
                               description="Agreeing observations needed to name a track. Higher = fewer wrong names, "
                               "later names.")
    instant_lead: float = Field(default=0.04, ge=0.0, le=2.0,
                                description="One observation this far above the decision threshold names a track at "
                                "once.")
    rename_ratio: float = Field(default=2.0, ge=1.0, le=100.0,
                                description="A named track is renamed only when another person's quality-weighted "
                                "support is this many times its current name's.")


@dataclass(frozen=True)
class IdentityChange:
    name: str
    previous: str | None
    similarity: float
    margin: float | None
    votes: int
    ts: float


class TrackIdentity:
    def __init__(self, cfg: VotingConfig, threshold: float) -> None:
        self.cfg = cfg
        self.threshold = threshold
        self.name: str | None = None
        self._support: dict[str | None, float] = defaultdict(float)
        self._votes: dict[str | None, int] = defaultdict(int)
        self._best: dict[str, tuple[float, float | None]] = {}
        self._instant = False
        self._misses = 0
        self._withdrawn: set[str] = set()

    @property
    def observations(self) -> int:
        return sum(self._votes.values())

    @property
    def settled(self) -> bool:
        return self.name is not None and (self._instant or self._votes[self.name] >= self.cfg.confirm_votes)

    @property
    def uncertain(self) -> bool:
        names = [n for n, v in self._votes.items() if n is not None and v > 0]
        return self.observations < self.cfg.confirm_votes or len(names) > 1

    @property
    def misses(self) -> int:
        """Observations in a row, the latest ones, that named nobody (0 after one that named someone)."""
        return self._misses

    def observe(self, candidate: str | None, similarity: float, margin: float | None, weight: float,
                ts: float, confirm: Callable[[str], bool] | None = None) -> IdentityChange | None:
        """One embedding's decision (an accepted name, or None for unknown) with its face quality as weight.
        Returns the change of name it causes, if any: a name that ``confirm`` (when given) accepts."""
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be a finite number > 0, got {weight}")
        if not math.isfinite(similarity):
            raise ValueError(f"similarity must be finite, got {similarity}")
        if candidate in self._withdrawn:
            candidate = None
        self._support[candidate] += weight
        self._votes[candidate] += 1
        self._misses = self._misses + 1 if candidate is None else 0
        if candidate is not None and similarity > self._best.get(candidate, (-2.0, None))[0]:
            self._best[candidate] = (similarity, margin)
        leader = max((n for n in self._support if n is not None), key=lambda n: self._support[n], default=None)
        if leader is None or leader == self.name:
            return None
        if self.name is None and self._may_name(leader, candidate, similarity) and (confirm is None or confirm(leader)):
            self._instant = self._instant or self._votes[leader] < self.cfg.confirm_votes
            return self._change(leader, ts)
        if self.name is not None and self._votes[leader] >= self.cfg.confirm_votes \
                and self._support[leader] >= self.cfg.rename_ratio * self._support[self.name] \
                and (confirm is None or confirm(leader)):
            return self._change(leader, ts)
        return None

    def withdraw(self, name: str) -> bool:
        """``name`` is not this track's person: its votes go to nobody and it never names this track again.
        Whether it was the track's name (the track is then unnamed)."""
        self._withdrawn.add(name)
        votes, support = self._votes.pop(name, 0), self._support.pop(name, 0.0)
        self._votes[None] += votes
        self._support[None] += support
        self._best.pop(name, None)
        if self.name != name:
            return False
        self.name, self._instant = None, False
        return True

    def _may_name(self, leader: str, candidate: str | None, similarity: float) -> bool:
        if candidate == leader and similarity >= self.threshold + self.cfg.instant_lead:
            return True
        return self._votes[leader] >= self.cfg.confirm_votes and self._support[leader] > self._support[None]

    def _change(self, name: str, ts: float) -> IdentityChange:
        previous, self.name = self.name, name
        similarity, margin = self._best[name]
        return IdentityChange(name, previous, similarity, margin, self._votes[name], ts)
