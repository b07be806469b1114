"""`argusnet visitors list|name VISITOR NAME|reject VISITOR NAME|unmerge VISITOR`: the provisional identities of
people nobody enrolled, kept in the store by the workers."""

from __future__ import annotations

import argparse
import time

from argusnet.commands.audit import record_change
from argusnet.commands.common import (
    add_gallery_arg,
    config_from,
    open_cli_store,
    print_json,
)
from identity.merges import promote_visitor, unmerge_visitor


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("visitors", help="list, name or reject the provisional visitor identities").add_subparsers(
        dest="visitors_command", metavar="ACTION", required=True)
    p = v.add_parser("list", help="every visitor: faces kept, first and last seen, rejected names")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_list)
    p = v.add_parser("name", help="name a visitor: their faces move to the gallery as NAME, their past events "
                     "name NAME")
    p.add_argument("visitor", metavar="VISITOR")
    p.add_argument("name", metavar="NAME")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_name)
    p = v.add_parser("reject", help="record that VISITOR is not NAME (their tracks will never be named NAME)")
    p.add_argument("visitor", metavar="VISITOR")
    p.add_argument("name", metavar="NAME")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_reject)
    p = v.add_parser("unmerge", help="undo a visitor's merge into a person (or its naming): its faces, and exactly "
                     "the events and live tracks the merge renamed, are the visitor's again")
    p.add_argument("visitor", metavar="VISITOR")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_unmerge)


def cmd_list(args: argparse.Namespace) -> int:
    with open_cli_store(args, config_from(args)) as store:
        rows = [{"visitor": v.visitor, "faces": v.faces, "first_seen": v.first_seen, "last_seen": v.last_seen,
                 "not": list(v.rejected)} for v in store.visitors.list()]
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
    with open_cli_store(args, config_from(args)) as store:
        report = promote_visitor(store, args.visitor, args.name)
    record_change(args, "name_visitor", args.name, visitor=args.visitor, faces=report.faces_added)
    print(f"{args.visitor} is now {args.name}: {report.faces_added} face(s) added to the gallery, "
          f"{report.events} event(s) renamed")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    with open_cli_store(args, config_from(args)) as store:
        store.visitors.reject(args.visitor, args.name)
    record_change(args, "reject", args.name, visitor=args.visitor)
    print(f"recorded: {args.visitor} is not {args.name}")
    return 0


def cmd_unmerge(args: argparse.Namespace) -> int:
    """The store's audit log records the unmerge (`identity.merges.unmerge_visitor`), the CLI user as the actor."""
    with open_cli_store(args, config_from(args)) as store:
        report = unmerge_visitor(store, args.visitor, actor=None)
    if args.json:
        print_json(report.to_json())
        return 0
    print(f"{report.visitor} is no longer {report.person}: {report.faces_restored} face(s) back as "
          f"{report.visitor}, {report.events} event(s) and {report.live_tracks} live track(s) name it again, "
          f"{report.person_faces_removed} face(s) taken back from {report.person}")
    return 0
