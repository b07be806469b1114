"""The identity rules over every store backend (the contract suite's fixtures): "not this person" on a track
(`identity.corrections.reject_track`) and taking negative evidence back."""

from __future__ import annotations

import numpy as np
import pytest

from identity.corrections import reject_track, rejected_tracks, remove_negative, track_source
from shared.errors import GalleryError
from store.types import EventQuery, EventRecord
from tests.test_store_contract import backend, event, face, near, opener, unit  # noqa: F401 - fixtures


def test_reject_keeps_the_face_unnames_the_history_marks_the_visitor_and_is_audited(opener):
    rng = np.random.default_rng(7)
    store = opener()
    ann = unit(rng)[0]
    store.persons.add_person("Ann", [face(ann)])
    visitor = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
    store.events.append([EventRecord(event("track_identified", "cam", 5, 1.0, visitor, visitor=True)),
                         EventRecord(event("track_identified", "cam", 5, 2.0, "Ann")),
                         EventRecord(event("track_ended", "cam", 5, 3.0, "Ann")),
                         EventRecord(event("track_identified", "cam", 6, 4.0, "Ann"))])
    report = reject_track(store, "cam", 5, "Ann", [face(near(rng, ann))], actor="alice")
    assert (report.events_unnamed, report.negatives_added, report.visitors) == (2, 1, (visitor,))
    names = {(e.event.track, e.event.name) for e in store.events.query(EventQuery(camera="cam"))}
    assert (5, "Ann") not in names and (6, "Ann") in names, "only that track's history is unnamed"
    (kept,) = store.negatives.faces_of("Ann")
    assert kept.source == track_source("cam", 5) and rejected_tracks(store, "Ann") == {"camera:cam/track:5"}
    assert store.visitors.rejections()[visitor] == frozenset({"Ann"})
    (record,) = [r for r in store.audit.list() if r.action == "reject"]
    assert (record.actor, record.subject, record.details["negatives"]) == ("alice", "Ann", 1)
    again = reject_track(store, "cam", 5, "Ann", [face(near(rng, ann))], actor="alice")  # a rerun finishes, adds nothing
    assert (again.events_unnamed, again.negatives_added) == (0, 0) and len(store.negatives.faces_of("Ann")) == 1
    with pytest.raises(GalleryError, match="no event naming 'Ann'"):
        reject_track(store, "cam", 99, "Ann", [], actor="alice")  # a track never named so
    with pytest.raises(GalleryError, match="is a visitor id"):
        reject_track(store, "cam", 5, visitor, [], actor="alice")


def test_negative_evidence_is_taken_back_one_face_at_a_time(opener):
    rng = np.random.default_rng(8)
    store = opener()
    store.persons.add_person("Ann", [face(unit(rng)[0])])
    store.events.append([EventRecord(event("track_identified", "cam", 1, 1.0, "Ann")),
                         EventRecord(event("track_identified", "cam", 2, 2.0, "Ann"))])
    for track in (1, 2):
        reject_track(store, "cam", track, "Ann", [face(unit(rng)[0])], actor="alice")
    first, second = store.negatives.faces_of("Ann")
    assert remove_negative(store, "Ann", first.face_id, actor="alice")
    assert not remove_negative(store, "Ann", first.face_id, actor="alice")
    assert [f.face_id for f in store.negatives.faces_of("Ann")] == [second.face_id]
    assert [r.action for r in store.audit.list()].count("remove_negative") == 1


class Naming:
    template_faces, top_k, cohort = 3, 10, True


def test_a_name_must_lead_the_sites_strangers_unless_the_stranger_is_that_person(opener):
    from identity.decision import DecisionRule
    from identity.naming import KeptFace, TrackNaming

    def unit_of(v):
        return (v / np.linalg.norm(v)).astype(np.float32)
    rng = np.random.default_rng(9)
    store = opener()
    ann, other = unit(rng, 2)
    other = unit_of(other - (other @ ann) * ann)  # orthogonal to Ann
    store.persons.add_person("Ann", [face(ann)])
    probe = unit_of(0.90 * ann + 0.44 * other)  # a stranger's face that resembles Ann (0.90) ...
    earlier = unit_of(0.86 * ann + 0.51 * other)  # ... his face seen before (0.86 to Ann, 0.999 to this one)
    stranger = store.visitors.match_or_create([face(earlier)], 0.99, 5).visitor
    naming = TrackNaming(store, DecisionRule(threshold=0.85, margin=0.01, name_threshold=0.88), Naming())
    faces = [KeptFace(1.0, probe)]
    assert naming.decide(faces, frozenset(), cohort=False).name == "Ann"  # the enrolled people alone: Ann
    refused = naming.decide(faces, frozenset())
    assert refused.name is None and refused.candidate == "Ann" and refused.margin < 0  # her lead over him
    assert naming.decide(faces, frozenset(), own_visitor=stranger).name == "Ann"  # the track's own visitor: no rival
    assert [h.name for h in store.visitors.search(probe[None], 3)[0]] == [stranger]
    before = store.visitors.match_or_create([face(unit_of(ann + 0.05 * other))], 0.999, 5).visitor
    assert before != stranger  # Ann herself, seen before she was enrolled: her visitor is named Ann by the rule
    named = naming.decide([KeptFace(1.0, unit_of(ann + 0.06 * other))], frozenset())
    assert named.name == "Ann" and named.margin is not None


def test_forget_erases_a_persons_face_kept_as_negative_evidence_under_another_name(opener):
    from identity.erasure import forget

    rng = np.random.default_rng(10)
    store = opener()
    store.persons.add_person("Ann", [face(unit(rng)[0])])
    store.persons.add_person("Bea", [face(unit(rng)[0])])
    store.events.append([EventRecord(event("track_identified", "cam", 5, 1.0, "Ann"))])
    reject_track(store, "cam", 5, "Ann", [face(unit(rng)[0])], actor="alice")  # it was Bea, named Ann by mistake
    store.events.append([EventRecord(event("track_identified", "cam", 5, 2.0, "Bea"))])
    store.negatives.add("Ann", [face(unit(rng)[0], "camera:cam/track:6")])  # another track: not Bea's
    report = forget(store, "Bea")
    assert report.negatives == 1
    assert [f.source for f in store.negatives.faces_of("Ann")] == ["camera:cam/track:6"]
