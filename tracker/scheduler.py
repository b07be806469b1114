"""Recognition scheduling: which tracks get an embedding this frame.

A track is embedded when it is new, when its face is clearly better than the best one embedded so far, and
otherwise only every ``refresh_s`` (named) or ``unnamed_refresh_s`` (not yet named) seconds, the latter
multiplied by ``unnamed_backoff`` for each embedding in a row past the third that named nobody (up to
``refresh_s``); never more often than ``min_interval_s``. At most ``budget`` embeddings a frame: new tracks first,
then unnamed ones, then better faces, then refreshes (longest waiting first).

Faces that cannot be named reliably are never embedded: quality below ``min_quality`` (blurred, turned, tiny) or a
box whose shorter side is under ``min_face_px``. A track is "new" until its first embedding, so a track seen only
small gets no embedding, hence no vote, no name and no visitor id (`gpu_worker.tracked` makes a visitor only
after embeddings), and is embedded at once, first in line, when a big enough face of it comes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from tracker.config import SchedulerConfig

NEW, UNNAMED, BETTER, REFRESH = 0, 1, 2, 3
# The first three misses of an unnamed (or uncertain) track keep the usual pace, the fourth waits longer: a face
# seen small or turned often takes a few tries (`eval track --face-height 40`: backing off from the first miss
# named 29 of 31 enrolled appearances, after the third 30, as without a back-off).
BACKOFF_AFTER_MISSES = 3


@dataclass(frozen=True)
class TrackCandidate:
    """A tracked face in this frame: its quality score (bigger, sharper, more frontal is higher), whether the
    track has a settled identity, whether its observations disagree or are few, the shorter side of its box
    in pixels (`gpu_worker.quality.FaceQuality.size_px`) and how many of its latest embeddings in a row named
    nobody (`identity.voting.TrackIdentity.misses`)."""

    track_id: int
    quality: float
    named: bool
    uncertain: bool
    size_px: float
    misses: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.quality):
            raise ValueError(f"quality of track {self.track_id} must be finite, got {self.quality}")
        if not (math.isfinite(self.size_px) and self.size_px >= 0):
            raise ValueError(f"face size of track {self.track_id} must be a finite number >= 0, got {self.size_px}")
        if self.misses < 0:
            raise ValueError(f"misses of track {self.track_id} must be >= 0, got {self.misses}")


@dataclass
class _History:
    best_quality: float
    last_ts: float
    count: int


class RecognitionScheduler:
    def __init__(self, cfg: SchedulerConfig) -> None:
        self.cfg = cfg
        self._history: dict[int, _History] = {}

    def _reason(self, c: TrackCandidate, now: float) -> int | None:
        h = self._history.get(c.track_id)
        if not self.recognisable(c):
            return None
        if h is None:
            return NEW
        waited = now - h.last_ts
        if waited < self.cfg.min_interval_s or (self.cfg.max_per_track and h.count >= self.cfg.max_per_track):
            return None
        if (not c.named or c.uncertain) and waited >= self.unnamed_wait(c.misses):
            return UNNAMED
        if c.quality > h.best_quality * (1.0 + self.cfg.quality_margin):
            return BETTER
        if waited >= self.cfg.refresh_s:
            return REFRESH
        return None

    def unnamed_wait(self, misses: int) -> float:
        """How long an unnamed (or uncertain) track waits for its next embedding after ``misses`` in a row that
        named nobody: never over refresh_s, however many (a stranger may stay in view for days)."""
        base, cap = self.cfg.unnamed_refresh_s, max(self.cfg.refresh_s, self.cfg.unnamed_refresh_s)
        steps = max(0, misses - BACKOFF_AFTER_MISSES)
        if steps == 0 or self.cfg.unnamed_backoff <= 1.0:
            return base
        if steps >= math.log(cap / base) / math.log(self.cfg.unnamed_backoff):
            return cap
        return min(cap, base * self.cfg.unnamed_backoff ** steps)

    def recognisable(self, candidate: TrackCandidate) -> bool:
        """Whether this face is good enough to be embedded at all: quality and size (see the module docstring)."""
        return candidate.quality >= self.cfg.min_quality and candidate.size_px >= self.cfg.min_face_px

    def may_choose(self, candidate: TrackCandidate, now: float) -> bool:
        """Whether ``choose`` could pick this track now at this quality (with a quality upper bound: False means
        it will not be picked at any quality up to it)."""
        return self._reason(candidate, now) is not None

    def choose(self, candidates: Sequence[TrackCandidate], now: float) -> list[int]:
        """Track ids to embed now, most urgent first, at most ``budget``."""
        ranked = []
        for c in candidates:
            reason = self._reason(c, now)
            if reason is not None:
                last = self._history[c.track_id].last_ts if c.track_id in self._history else float("-inf")
                ranked.append((reason, last, -c.quality, c.track_id))
        ranked.sort()
        return [track_id for *_, track_id in ranked[: self.cfg.budget]]

    def record(self, track_id: int, quality: float, ts: float) -> None:
        """An embedding of ``track_id`` with this face quality was made at ``ts``."""
        h = self._history.get(track_id)
        if h is None:
            self._history[track_id] = _History(quality, ts, 1)
            return
        h.best_quality, h.last_ts, h.count = max(h.best_quality, quality), ts, h.count + 1

    def forget(self, track_id: int) -> None:
        self._history.pop(track_id, None)

    def embeddings_of(self, track_id: int) -> int:
        h = self._history.get(track_id)
        return 0 if h is None else h.count
