"""`argusnet audit list|verify`: the tamper-evident audit log of a local store (store/audit.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from argusnet.commands.common import add_gallery_arg, config_from, print_json, store_config
from shared.errors import EXIT_FAILURE, EXIT_OK, GalleryMissingError, InputError
from store.audit import AuditLog, AuditRecord
from store.config import LocalStoreConfig


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="list or verify the store's tamper-evident audit log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True)
    p = a.add_parser("list", help="every audit record, oldest first (a forgotten subject shows as its id)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_list)
    p = a.add_parser("verify", help="check the hash chain: exit 0 when intact, 1 naming the first bad record")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_verify)


def audit_log(args: argparse.Namespace) -> AuditLog:
    """The audit log of the store the command names; only local stores keep one for now."""
    cfg = store_config(args, config_from(args))
    if not isinstance(cfg, LocalStoreConfig):
        raise InputError(f"the audit log is kept by local stores only; the configured store is {cfg.type!r}")
    directory: Path = cfg.directory()
    if not directory.is_dir():
        raise GalleryMissingError(f"no store directory at {directory}")
    return AuditLog(directory)


def _line(r: AuditRecord) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.ts))
    subject = r.subject if r.subject is not None else (r.subject_id or "-")
    details = " ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
    return f"  {r.seq:>6}  {when}  {r.actor}  {r.action}  {subject}{'  ' + details if details else ''}"


def cmd_list(args: argparse.Namespace) -> int:
    records = audit_log(args).list()
    if args.json:
        print_json({"records": [r.to_json() for r in records]})
        return EXIT_OK
    print(f"{len(records)} audit record(s)")
    for r in records:
        print(_line(r))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    log = audit_log(args)
    report = log.verify()
    if report.ok:
        print(f"audit log intact: {report.records} record(s) in {log.path}")
        return EXIT_OK
    seq = "?" if report.first_bad_seq is None else report.first_bad_seq
    print(f"audit log {log.path} is NOT intact: line {report.first_bad_line} (seq {seq}): {report.reason}")
    return EXIT_FAILURE


def record_change(args: argparse.Namespace, action: str, subject: str | None, **details: object) -> None:
    """Append one record of a change a command just made (after it succeeded). Only local stores keep an audit
    log for now; ``details`` must hold no person's name (only ``subject`` is pseudonymous)."""
    cfg = store_config(args, config_from(args))
    if isinstance(cfg, LocalStoreConfig) and cfg.directory().is_dir():
        AuditLog(cfg.directory()).append(action=action, subject=subject, details=dict(details))


def record_forget(args: argparse.Namespace, name: str) -> None:
    """After a forget: a ``forget`` record (holding only the subject's id) is appended and ``name`` leaves the
    subject mapping, so the log no longer leads to it. Local stores only, as ``record_change``."""
    cfg = store_config(args, config_from(args))
    if isinstance(cfg, LocalStoreConfig) and cfg.directory().is_dir():
        AuditLog(cfg.directory()).forget_subject(name)
