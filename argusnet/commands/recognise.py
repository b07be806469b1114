"""`argusnet enroll`, `identify` and `gallery`: the photo-level recognition commands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from argusnet.commands.audit import record_change
from argusnet.commands.common import (
    add_gallery_arg,
    config_from,
    engine_from,
    open_cli_store,
    print_json,
    round_or_none,
)
from argusnet.commands.tracks import register_negatives
from gpu_worker.align import align_faces
from gpu_worker.engine import Engine, EnrolmentFace, Identification
from identity.merges import remove_person
from shared.errors import GalleryMissingError, InputError
from shared.images import read_image
from shared.names import check_person_name
from store.base import PersonGallery
from store.export import export_gallery


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="enrol a person from one or more photos (one face each)")
    p.add_argument("name", help="the person's name")
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    add_gallery_arg(p)
    p.add_argument("--skip-bad", action="store_true",
                   help="enrol the photos that pass the quality gate and report the others (default: refuse all "
                   "when any photo is refused)")
    p.add_argument("--allow-duplicate", action="store_true",
                   help="enrol a photo even when its face already matches another enrolled person at or above the "
                   "recognition threshold (default: refuse, nothing is enrolled)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_enroll)

    p = sub.add_parser("identify", help="name every face in a photo against a gallery")
    p.add_argument("photo", type=Path)
    add_gallery_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_identify)

    g = sub.add_parser("gallery", help="inspect and manage a gallery").add_subparsers(
        dest="gallery_command", metavar="ACTION", required=True)
    register_negatives(g)
    p = g.add_parser("list", help="persons and face counts")
    add_gallery_arg(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=cmd_gallery_list)
    p = g.add_parser("remove", help="remove a person, all their faces and their negative evidence")
    p.add_argument("name")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_gallery_remove)
    p = g.add_parser("export", help="write a JSON description of the gallery")
    p.add_argument("out", type=Path, metavar="OUT")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_gallery_export)
    p = g.add_parser("reembed", help="recompute every embedding (persons, visitors and negative evidence) from the "
                     "stored crops with the configured model")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_gallery_reembed)


def enrolment_faces(engine: Engine, photos: list[Path]) -> tuple[list[EnrolmentFace], dict[str, str]]:
    """Faces that pass the gate, and the refusal reason of every other photo."""
    accepted: list[EnrolmentFace] = []
    refused: dict[str, str] = {}
    for photo in tqdm(photos, desc="enrol", unit="photo", disable=None if len(photos) > 3 else True, leave=False):
        try:
            accepted.append(engine.enrolment_face(read_image(photo, engine.cfg.images), str(photo)))
        except InputError as exc:
            refused[str(photo)] = str(exc)
    return accepted, refused


@dataclass(frozen=True)
class Duplicate:
    """An enrolment photo whose face already matches another enrolled person."""

    source: str
    person: str
    similarity: float

    def describe(self, threshold: float) -> str:
        return (f"{self.source}: the face already matches enrolled person {self.person!r} (similarity "
                f"{self.similarity:.3f} >= recognition threshold {threshold:.3f})")


def duplicates(gallery: PersonGallery, faces: list[EnrolmentFace], name: str, threshold: float) -> list[Duplicate]:
    """The faces whose best match among the persons other than ``name`` reaches ``threshold``."""
    if not faces or gallery.face_count == 0:
        return []
    own = next((p.faces for p in gallery.persons() if p.name == name), 0)
    ranked = gallery.search(np.stack([f.embedding for f in faces]), own + 1)  # the best other face is in there
    found = []
    for face, hits in zip(faces, ranked):
        other = next((h for h in hits if h.name != name), None)
        if other is not None and other.similarity >= threshold:
            found.append(Duplicate(face.source, other.name, other.similarity))
    return found


def check_duplicates(args: argparse.Namespace, engine: Engine, faces: list[EnrolmentFace]) -> list[Duplicate]:
    """Refuse (InputError, nothing written) faces of another enrolled person unless --allow-duplicate; the
    duplicates that were allowed."""
    try:
        store = open_cli_store(args, engine.cfg, engine)
    except GalleryMissingError:
        return []  # nobody is enrolled there yet
    with store:
        found = duplicates(store.persons, faces, args.name, engine.rule.threshold)
    for dup in found:
        print(("allowed " if args.allow_duplicate else "refused ") + dup.describe(engine.rule.threshold),
              file=sys.stderr)
    if found and not args.allow_duplicate:
        first = found[0]
        raise InputError(f"{len(found)} photo(s) show a face already enrolled as another person ({first.person!r}, "
                         f"similarity {first.similarity:.3f}); nothing was enrolled (pass --allow-duplicate to enrol "
                         "them anyway)")
    return found


def cmd_enroll(args: argparse.Namespace) -> int:
    check_person_name(args.name)  # before any model or photo work
    engine = engine_from(args)
    cfg = engine.cfg
    try:  # fail fast on a bad store (another model, unreadable), before any photo work
        open_cli_store(args, cfg, engine).close()
    except GalleryMissingError:
        pass  # made below, once a photo passed the gate: a refused enrolment writes nothing
    faces, refused = enrolment_faces(engine, args.photos)
    for photo, reason in refused.items():
        print(f"refused {reason}", file=sys.stderr)
    if refused and not args.skip_bad:
        raise InputError(f"{len(refused)} of {len(args.photos)} photo(s) refused; nothing was enrolled "
                         "(fix or drop them, or pass --skip-bad)")
    if not faces:
        raise InputError("no photo passed the quality gate; nothing was enrolled")
    allowed = check_duplicates(args, engine, faces)
    with open_cli_store(args, cfg, engine, create=True) as store:
        store.persons.add_person(args.name, [f.sample() for f in faces])
        persons, total, where = len(store.persons.persons()), store.persons.face_count, store.describe()
    record_change(args, "enrol", args.name, faces=len(faces), duplicates_allowed=len(allowed))
    result = {"name": args.name, "enrolled": [f.source for f in faces], "refused": refused,
              "duplicates": [{"photo": d.source, "person": d.person, "similarity": round(d.similarity, 4)}
                             for d in allowed], "gallery": where, "persons": persons, "faces": total}
    if args.json:
        print_json(result)
    else:
        print(f"enrolled {args.name}: {len(faces)} face(s); gallery {where} holds {persons} person(s), "
              f"{total} face(s)")
    return 0


def identification_json(item: Identification) -> dict:
    face, who = item.face, item.identity
    return {"box": [round(float(v), 1) for v in face.box], "score": round(face.score, 4), "name": who.label,
            "similarity": round_or_none(who.similarity), "margin": round_or_none(who.margin),
            "candidate": who.candidate}


def cmd_identify(args: argparse.Namespace) -> int:
    engine = engine_from(args)
    with open_cli_store(args, engine.cfg, engine) as store:
        results = engine.identify(read_image(args.photo, engine.cfg.images), store.persons)
    faces = [identification_json(r) for r in results]
    if args.json:
        print_json({"photo": str(args.photo), "model": engine.embedder.name, "faces": faces})
        return 0
    if not faces:
        print(f"{args.photo}: no face found")
    for i, face in enumerate(faces, start=1):
        sim = "-" if face["similarity"] is None else f"{face['similarity']:.3f}"
        margin = "-" if face["margin"] is None else f"{face['margin']:.3f}"
        print(f"face {i}: {face['name']}  similarity {sim}  margin {margin}  box {face['box']}")
    return 0


def cmd_gallery_list(args: argparse.Namespace) -> int:
    with open_cli_store(args, config_from(args)) as store:
        persons = store.persons.persons()
        model = store.persons.model
    if args.json:
        print_json({"model": model, "persons": [{"name": p.name, "faces": p.faces, "created": p.created}
                                                for p in persons]})
    else:
        print(f"model {model}: {len(persons)} person(s)")
        for p in persons:
            print(f"  {p.name}  ({p.faces} face(s))")
    return 0


def cmd_gallery_remove(args: argparse.Namespace) -> int:
    with open_cli_store(args, config_from(args)) as store:
        removed = remove_person(store, args.name)
    record_change(args, "remove", args.name, faces=removed.faces, negatives=removed.negatives)
    negatives = f" and {removed.negatives} negative face(s)" if removed.negatives else ""
    print(f"removed {args.name}: {removed.faces} face(s){negatives}")
    return 0


def cmd_gallery_export(args: argparse.Namespace) -> int:
    with open_cli_store(args, config_from(args)) as store:
        export_gallery(store.persons, args.out)
    print(f"exported to {args.out}")
    return 0


def _reembed(gallery, embedder) -> int:
    new = {}
    for face in tqdm(gallery.all_faces(), desc="reembed", unit="face", disable=None, leave=False):
        chip = align_faces(face.crop, face.landmarks[None], embedder.template)
        new[face.face_id] = embedder.embed(chip)[0]
    gallery.replace_embeddings(embedder.name, embedder.dim, new)
    return len(new)


def cmd_gallery_reembed(args: argparse.Namespace) -> int:
    engine = engine_from(args)
    embedder = engine.embedder
    with open_cli_store(args, engine.cfg) as store:
        count = _reembed(store.persons, embedder)
        visitors = _reembed(store.visitors, embedder)
        negatives = _reembed(store.negatives, embedder)
    record_change(args, "reembed", None, model=embedder.name, faces=count, visitor_faces=visitors,
                  negative_faces=negatives)
    extra = [f"{n} {kind} face(s)" for n, kind in ((visitors, "visitor"), (negatives, "negative")) if n]
    print(f"re-embedded {count} face(s) with {embedder.name}" + (f" and {', '.join(extra)}" if extra else ""))
    return 0
