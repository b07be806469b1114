"""`argusnet forget PERSON|visitor-N [--json OUT] [--gallery DIR]`: erase one identity everywhere the store keeps it
(identity/erasure.py) and in the JSONL event files the site configuration names (store.event_files), and say
what went, per kind and per file. Exit 0 when everything went, 1 when the backend had to leave
something (the report says what), 2 for a name the store and the event files hold nothing of (nothing changed)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from argusnet.commands.common import add_gallery_arg, config_from, open_cli_store, store_config
from identity.erasure import ForgetReport, NothingToForget, erase_from_event_files, forget
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
    """The store first, then the configured event files (store.event_files); exit 1 when either left something.
    A name the store holds nothing of is still erased from the files; exit 2 only when they held nothing of it
    either."""
    cfg = config_from(args)
    event_files = store_config(args, cfg).event_files
    with open_cli_store(args, cfg) as store:
        where = store.describe()
        try:
            report = forget(store, args.name)
        except NothingToForget:
            files = erase_from_event_files(event_files, args.name)
            if not any(f.removed or f.error for f in files):
                raise
            report = None
    if report is None:
        print(f"the store {where} held nothing of {args.name}")
    else:
        files = erase_from_event_files(event_files, args.name)
        _print(report, where)
    for f in files:
        print(f"  {f.describe()}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        body = {"store": where, **(report.to_json() if report else {"name": args.name, "left": []}),
                "event_files": [asdict(f) for f in files]}
        args.json.write_text(json.dumps(body, indent=2) + "\n")
    left = (report is not None and report.left) or any(f.error for f in files)
    return EXIT_FAILURE if left else EXIT_OK
