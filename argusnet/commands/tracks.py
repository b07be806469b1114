"""`argusnet tracks reject CAMERA TRACK NAME`: "not this person" from the command line (the dashboard's button runs
it too); `argusnet gallery negatives NAME [--remove FACE_ID]` lists or takes back a person's negative evidence.

The track's stored best face (the crop its worker kept) is embedded here and kept as negative evidence for NAME
(`identity.corrections.reject_track`): its events stop naming NAME, and workers do not name a face nearer to NAME's
negative faces than to NAME's own faces as NAME again."""

from __future__ import annotations

import argparse

from argusnet.commands.common import add_gallery_arg, config_from, engine_from, open_cli_store, print_json
from gpu_worker.align import align_faces
from gpu_worker.engine import STORED_CROP
from identity.corrections import reject_track, remove_negative, track_source
from shared.errors import GalleryError, InputError
from shared.ids import is_valid_id
from shared.images import decode_image
from store.base import Store
from store.types import FaceSample


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tracks", help="correct a track's name").add_subparsers(
        dest="tracks_command", metavar="ACTION", required=True)
    p = t.add_parser("reject", help="not this person: the track's face becomes negative evidence for NAME and its "
                     "events stop naming NAME")
    p.add_argument("camera", metavar="CAMERA")
    p.add_argument("track", metavar="TRACK", type=int)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_reject)


def register_negatives(gallery: argparse._SubParsersAction) -> None:
    """`argusnet gallery negatives` (registered under the gallery command)."""
    p = gallery.add_parser("negatives", help="a person's negative evidence (faces operators said are not them)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--remove", type=int, default=None, metavar="FACE_ID", help="take this negative face back")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_negatives)


def track_faces(args: argparse.Namespace, store: Store, camera: str, track: int) -> list[FaceSample]:
    """The track's stored best face, embedded by the configured embedder ([] when the track has none stored:
    no model is loaded then). GalleryError when the store holds another embedder's faces."""
    try:
        jpeg = store.media.get_crop(f"{camera}/{track}")
    except KeyError:
        return []
    engine = engine_from(args)
    if store.negatives.model != engine.embedder.name:
        raise GalleryError(f"the store holds {store.negatives.model} embeddings but the configured embedder is "
                           f"{engine.embedder.name}")
    crop = decode_image(jpeg, engine.cfg.images, f"crop of {camera}/{track}")
    if crop.shape[:2] != (STORED_CROP.size, STORED_CROP.size):
        raise InputError(f"the stored face of {camera}/{track} is {crop.shape[1]}x{crop.shape[0]}, expected "
                         f"{STORED_CROP.size}x{STORED_CROP.size}")
    chip = align_faces(crop, STORED_CROP.points[None], engine.embedder.template)
    embedding = engine.embedder.embed(chip)[0]
    return [FaceSample(embedding, crop, STORED_CROP.points.copy(), track_source(camera, track))]


def cmd_reject(args: argparse.Namespace) -> int:
    if not is_valid_id(args.camera) or args.track < 0:
        raise InputError(f"no such track: {args.camera}/{args.track}")
    with open_cli_store(args, config_from(args)) as store:
        faces = track_faces(args, store, args.camera, args.track)
        if not faces and any(t.track == args.track for t in store.live.alive(args.camera)):
            raise InputError(f"track {args.camera}/{args.track} is still live and its face is not stored yet (a worker "
                             "stores it when it names the track): try again in a few seconds")
        report = reject_track(store, args.camera, args.track, args.name, faces, actor=None)
    if args.json:
        print_json(report.as_dict())
        return 0
    print(f"{args.camera}/{args.track} is not {args.name}: {report.events_unnamed} event(s) unnamed, "
          f"{report.negatives_added} face(s) kept as negative evidence"
          + (f"; {', '.join(report.unmerged)} unmerged from {args.name}" if report.unmerged else "")
          + (f"; {', '.join(report.visitors)} marked as not {args.name}" if report.visitors else ""))
    return 0


def cmd_negatives(args: argparse.Namespace) -> int:
    with open_cli_store(args, config_from(args)) as store:
        if args.remove is not None and not remove_negative(store, args.name, args.remove, actor=None):
            raise GalleryError(f"{args.name!r} has no negative face {args.remove}")
        faces = store.negatives.faces_of(args.name)
    rows = [{"face": f.face_id, "source": f.source} for f in faces]
    if args.json:
        print_json({"name": args.name, "negatives": rows, "removed": args.remove})
        return 0
    if args.remove is not None:
        print(f"removed negative face {args.remove} of {args.name}")
    print(f"{len(rows)} negative face(s) of {args.name}")
    for row in rows:
        print(f"  {row['face']}: from {row['source']}")
    return 0
