"""`argusnet visitors list|name VISITOR NAME|reject VISITOR NAME`: the provisional identities of people nobody
enrolled, kept in the gallery's ``visitors/`` sub-directory by the workers."""

from __future__ import annotations

import argparse
import time

from argusnet.commands.common import add_gallery_arg, config_from, gallery_dir, print_json
from gpu_worker.gallery import Gallery
from gpu_worker.identity_store import name_visitor, visitors_dir
from shared.errors import GalleryError


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("visitors", help="list, name or reject the provisional visitor identities").add_subparsers(
        dest="visitors_command", metavar="ACTION", required=True)
    p = v.add_parser("list", help="every visitor: faces kept, first and last seen, rejected names")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_list)
    p = v.add_parser("name", help="name a visitor: their faces move to the gallery as NAME")
    p.add_argument("visitor", metavar="VISITOR")
    p.add_argument("name", metavar="NAME")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_name)
    p = v.add_parser("reject", help="record that VISITOR is not NAME (their tracks will never be named NAME)")
    p.add_argument("visitor", metavar="VISITOR")
    p.add_argument("name", metavar="NAME")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_reject)


def _open_visitors(args: argparse.Namespace) -> Gallery:
    directory = visitors_dir(gallery_dir(args))
    if not (directory / "gallery.sqlite").is_file():
        raise GalleryError(f"no visitors yet in {gallery_dir(args)} (workers create {directory} when they see "
                           "someone nobody enrolled)")
    return Gallery.open(directory, config_from(args).gallery)


def cmd_list(args: argparse.Namespace) -> int:
    with _open_visitors(args) as visitors:
        rejected = visitors.rejections()
        rows = [{"visitor": p.name, "faces": p.faces, "first_seen": p.created, "last_seen": p.last_seen,
                 "not": sorted(rejected.get(p.name, ()))} for p in visitors.persons()]
    if args.json:
        print_json({"visitors": rows})
        return 0
    now = time.time()
    print(f"{len(rows)} visitor(s)")
    for r in rows:
        not_names = f"; not {', '.join(r['not'])}" if r["not"] else ""
        print(f"  {r['visitor']}: {r['faces']} face(s), last seen {(now - r['last_seen']) / 60:.0f} min ago"
              f"{not_names}")
    return 0


def cmd_name(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    with _open_visitors(args) as visitors, Gallery.open(gallery_dir(args), cfg.gallery) as persons:
        moved = name_visitor(persons, visitors, args.visitor, args.name)
    print(f"{args.visitor} is now {args.name}: {moved} face(s) added to the gallery")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    with _open_visitors(args) as visitors:
        visitors.reject(args.visitor, args.name)
    print(f"recorded: {args.visitor} is not {args.name}")
    return 0
