"""`argusnet forget PERSON|visitor-N [--json OUT] [--gallery DIR]`: erase one identity everywhere the store keeps it
(identity/erasure.py) and say what went, per kind. Exit 0 when everything went, 1 when the backend had to leave
something (the report says what), 2 for a name the store holds nothing of (nothing changed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from argusnet.commands.common import add_gallery_arg, config_from, open_cli_store
from identity.erasure import ForgetReport, forget
from shared.errors import EXIT_FAILURE, EXIT_OK

KINDS = (("faces", "face(s)"), ("negatives", "negative face(s)"), ("visitor_faces", "visitor face(s)"),
         ("rejections", "rejection(s)"), ("merges", "merge(s)"), ("events", "event(s)"), ("crops", "crop(s)"),
         ("live_tracks", "live track(s)"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forget", help="erase a person or visitor everywhere: faces, negative evidence, visitor "
                       "faces, rejections, merges, events, crops, live tracks", description=__doc__)
    p.add_argument("name", metavar="PERSON|visitor-N")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the report as JSON here")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_forget)


def _print(report: ForgetReport, where: str) -> None:
    counts = ", ".join(f"{getattr(report, kind)} {label}" for kind, label in KINDS)
    print(f"forgot {report.name} in {where}: {counts}")
    if report.left:
        print("NOT erased (the backend cannot yet):")
        for line in report.left:
            print(f"  - {line}")


def cmd_forget(args: argparse.Namespace) -> int:
    with open_cli_store(args, config_from(args)) as store:
        report = forget(store, args.name)
        where = store.describe()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"store": where, **report.to_json()}, indent=2) + "\n")
    _print(report, where)
    return EXIT_FAILURE if report.left else EXIT_OK
