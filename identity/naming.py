"""A live track's name by the rules, over the store: what the worker's frame processor (`gpu_worker.tracked`) asks
before it names a track, merges its visitor, or keeps a name an operator took back.

- ``usable``: a face's candidates less the persons an operator said the track's visitor is not, and less those
  the face is at least as similar to by their negative evidence (`identity.decision.without_contradicted`).
- ``confirm``: the track as a whole is NAME: its template (`identity.decision.track_template` of its best faces)
  is named so by the naming rule (`identity.decision.decide_name`), and, when the track was a visitor, so is that
  visitor's own template: a track that switched people (a visitor's face, then another person's) is left unnamed,
  and a visitor is never merged into someone its own faces are not.
- The cohort (``recognition.cohort``): the name must also lead the site's closest visitors (strangers seen here
  before, `store.base.VisitorStore.search`) by the margin. A stranger who comes back is nearer to his own visitor
  than to an enrolled person he merely resembles. A visitor whose own faces the naming rule names as that person
  is that person (seen before he was enrolled), not a stranger: it does not count against him.
- ``rejected``: which of the live named tracks an operator said are not their person (`identity.corrections`).

Store errors (`shared.errors.StoreError`) reach the caller, which counts them and asks again later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import numpy as np

from identity.corrections import rejected_tracks, track_source
from identity.decision import DecisionRule, Hit, Identity, decide_name, track_template, without_contradicted
from shared.errors import GalleryError
from store.base import Store
from store.types import is_visitor_name

NOBODY = Identity(None, None, None, None)
COHORT_VISITORS = 5  # the closest visitors a name is checked against


class NamingSettings(Protocol):
    """What the rules read of the recognition configuration (`identity.decision.RecognitionConfig`)."""

    template_faces: int
    top_k: int
    cohort: bool


@dataclass(frozen=True)
class KeptFace:
    """One of a track's kept faces: its quality score and its embedding."""

    quality: float
    embedding: np.ndarray


@dataclass(frozen=True)
class Confirmation:
    """Whether the track is the person (``confirmed``), the decision on its template (why: its similarity and
    lead), and whether its visitor may be merged into the person (its own faces were found to be him; False when
    there was no visitor, or it is gone or already merged)."""

    confirmed: bool
    decision: Identity
    merge: bool = False


@dataclass(frozen=True)
class LiveName:
    """A live track named as an enrolled person."""

    camera: str
    track: int
    name: str


class TrackNaming:
    def __init__(self, store: Store, rule: DecisionRule, cfg: NamingSettings) -> None:
        self.store, self.rule, self.cfg = store, rule, cfg

    @staticmethod
    def usable(hits: Sequence[Hit], negatives: Sequence[Hit], rejected: frozenset[str]) -> list[Hit]:
        """``hits`` (persons for one face) less ``rejected`` and the persons ``negatives`` (hits over the negative
        faces, for the same face) contradict."""
        return without_contradicted([h for h in hits if h.name not in rejected],
                                    {h.name: h.similarity for h in negatives})

    def decide(self, faces: Sequence[KeptFace], rejected: frozenset[str], own_visitor: str | None = None,
               cohort: bool = True) -> Identity:
        """The naming rule's decision on the template of ``faces``; with ``cohort`` (and the setting), against
        the site's visitors too (``own_visitor``, the track's own, left out)."""
        if not faces:
            return NOBODY
        template = track_template([f.embedding for f in faces], [f.quality for f in faces], self.cfg.template_faces)
        hits = self.store.persons.search(template[None], self.cfg.top_k)[0]
        negatives = self.store.negatives.search(template[None], self.cfg.top_k)[0]
        decision = decide_name(self.usable(hits, negatives, rejected), self.rule)
        if decision.name is None or not (cohort and self.cfg.cohort):
            return decision
        return self._against_visitors(template, decision, own_visitor, rejected)

    def _against_visitors(self, template: np.ndarray, decision: Identity, own_visitor: str | None,
                          rejected: frozenset[str]) -> Identity:
        """``decision`` when its person leads every close visitor by the margin (or the visitor is him), else
        no name; its margin becomes the lead over the closest person or visitor."""
        lead = decision.margin
        for hit in self.store.visitors.search(template[None], COHORT_VISITORS)[0]:
            if hit.name == own_visitor:
                continue
            gap = float(decision.similarity - hit.similarity)
            if gap >= self.rule.margin:
                lead = gap if lead is None else min(lead, gap)
                break
            if not self._visitor_is(hit.name, decision.name, rejected):
                return Identity(None, decision.name, decision.similarity, gap)
        return Identity(decision.name, decision.candidate, decision.similarity, lead)

    def _visitor_is(self, visitor: str, name: str, rejected: frozenset[str]) -> bool:
        """Whether the naming rule names ``visitor``'s own faces as ``name``."""
        try:
            faces = self.store.visitors.faces_of(visitor)
        except GalleryError:  # expired or merged meanwhile
            return False
        return self.decide([KeptFace(1.0, f.embedding) for f in faces], rejected, cohort=False).name == name

    def confirm(self, faces: Sequence[KeptFace], name: str, visitor: str | None,
                rejected: frozenset[str]) -> Confirmation:
        """Whether a track with these kept ``faces`` (that was ``visitor``, if not None) is ``name``."""
        decision = self.decide(faces, rejected, own_visitor=visitor)
        if decision.name != name:
            return Confirmation(False, decision)
        if visitor is None or is_visitor_name(name):
            return Confirmation(True, decision)
        try:
            own = self.store.visitors.faces_of(visitor)
        except GalleryError:  # the visitor expired or was merged meanwhile: nothing of it to check or merge
            return Confirmation(True, decision)
        if self.store.visitors.merged_into(visitor) is not None:
            return Confirmation(True, decision)
        mean = self.decide([KeptFace(1.0, f.embedding) for f in own], rejected, own_visitor=visitor)
        return Confirmation(mean.name == name, decision, merge=mean.name == name)

    def rejected(self, live: Iterable[LiveName]) -> list[LiveName]:
        """The live tracks an operator said are not the person they are named as."""
        sources: dict[str, set[str]] = {}
        out = []
        for item in live:
            if item.name not in sources:
                sources[item.name] = rejected_tracks(self.store, item.name)
            if track_source(item.camera, item.track) in sources[item.name]:
                out.append(item)
        return out
