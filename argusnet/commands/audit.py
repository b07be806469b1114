"""`argusnet audit list|verify`: the tamper-evident audit log of the store, on either backend (store/audit.py)."""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import Iterator

from argusnet.commands.common import add_gallery_arg, config_from, print_json, store_config
from shared.errors import EXIT_FAILURE, EXIT_OK, GalleryMissingError
from store import opened_audit
from store.audit import AuditRecord, AuditReport, AuditTrail


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="list or verify the store's tamper-evident audit log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True)
    p = a.add_parser("list", help="every audit record, oldest first (a forgotten subject shows as its id)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_list)
    p = a.add_parser("verify", help="check the hash chain (HMACs with store.audit_key_file): exit 0 when intact "
                     "(saying whether it is keyed), 1 naming the first bad record")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_verify)


@contextmanager
def audit_log(args: argparse.Namespace) -> Iterator[AuditTrail]:
    """The audit log of the store the command names (GalleryMissingError when there is no store)."""
    cfg = store_config(args, config_from(args))
    with opened_audit(cfg) as trail:
        if trail is None:
            raise GalleryMissingError(f"no store at {cfg.describe()}: nothing has been audited yet")
        yield trail


def _line(r: AuditRecord) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.ts))
    subject = r.subject if r.subject is not None else (r.subject_id or "-")
    details = " ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
    return f"  {r.seq:>6}  {when}  {r.actor}  {r.action}  {subject}{'  ' + details if details else ''}"


def cmd_list(args: argparse.Namespace) -> int:
    with audit_log(args) as trail:
        records = trail.list()
    if args.json:
        print_json({"records": [r.to_json() for r in records]})
        return EXIT_OK
    print(f"{len(records)} audit record(s)")
    for r in records:
        print(_line(r))
    return EXIT_OK


UNKEYED = ("the chain is NOT keyed (store.audit_key_file is unset): it finds accidents, but whoever can write the "
           "log can rewrite it and recompute every hash; make a key apart from the store (`argusnet store keygen "
           "FILE`) and set store.audit_key_file")


def _keying(report: AuditReport) -> str:
    """What the chain's hashes prove, in words."""
    if not report.key_set:
        return UNKEYED
    if report.unkeyed:
        return (f"{report.keyed} record(s) keyed with store.audit_key_file; the first {report.unkeyed} were written "
                "before the key was set and are only hash-chained")
    return "every record keyed with store.audit_key_file"


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 for an intact chain (keyed or not: an unkeyed one is said on stdout), 1 naming the first bad record."""
    with audit_log(args) as trail:
        report, where = trail.verify(), trail.where
    if report.ok:
        print(f"audit log intact: {report.records} record(s) in {where}")
        print(_keying(report))
        return EXIT_OK
    seq = "?" if report.first_bad_seq is None else report.first_bad_seq
    print(f"audit log {where} is NOT intact: line {report.first_bad_line} (seq {seq}): {report.reason}")
    return EXIT_FAILURE


def record_change(args: argparse.Namespace, action: str, subject: str | None, **details: object) -> None:
    """Append one record of a change a command just made (after it succeeded) to the store's audit log;
    ``details`` must hold no person's name (only ``subject`` is pseudonymous)."""
    with opened_audit(store_config(args, config_from(args))) as trail:
        if trail is not None:
            trail.append(action=action, subject=subject, details=dict(details))

