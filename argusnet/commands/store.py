"""`argusnet store migrate --from SPEC --to SPEC [--json]`: copy a whole store (gallery, negative evidence, visitors,
crops, event log) between backends and verify the copy. SPEC is ``local:DIR`` or ``redis://HOST:PORT/DB``
(``rediss://`` for TLS).

The destination must be empty (a new directory, database or ``--to-prefix``): a copy into a store that already holds
persons, negative evidence, visitors or events is refused with exit 2 (there is no ``--force``: merging two stores'
visitor numbers and event ids is not a migration, and such a copy could not be verified). Exit 0 when the copy
verified, 1 when it did not (the report says which check failed), 2 for bad input (a bad SPEC, a missing source, a
non-empty destination)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from pydantic import ValidationError

from argusnet.commands.common import (
    add_gallery_arg,
    config_from,
    engine_from,
    open_cli_store,
    print_json,
    store_config,
)
from shared.errors import EXIT_FAILURE, GalleryMissingError, InputError
from store import open_store, opened_audit
from store.config import LocalStoreConfig, RedisStoreConfig, StoreConfig
from store.crypto import KEY_BYTES, Cipher, load_key
from store.local.store import rekey_local
from store.migrate import MigrationReport, migrate

LOCAL = "local:"


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("store", help="whole-store operations: migrate between backends, rekey").add_subparsers(
        dest="store_command", metavar="ACTION", required=True)
    p = s.add_parser("migrate", help="copy a store (persons, negative evidence, visitors, crops, events) into an empty "
                     "one and verify",
                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, metavar="SPEC", help="local:DIR or redis://HOST:PORT/DB")
    p.add_argument("--to", dest="destination", required=True, metavar="SPEC",
                   help="local:DIR or redis://HOST:PORT/DB; must be empty (created when missing)")
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help="file holding the Redis password (its first line), for every redis side without its own")
    p.add_argument("--from-password-file", type=Path, metavar="FILE", help="the source's Redis password file")
    p.add_argument("--to-password-file", type=Path, metavar="FILE", help="the destination's Redis password file")
    p.add_argument("--from-prefix", default="argusnet", metavar="P", help="the source's store.prefix (redis)")
    p.add_argument("--to-prefix", default="argusnet", metavar="P", help="the destination's store.prefix (redis)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_migrate)
    register_rekey(s)
    p = s.add_parser("keygen", help="write a new random 32-byte key (64 hex digits, mode 0600) for "
                     "store.encryption_key_file or store.audit_key_file", description=KEYGEN_HELP)
    p.add_argument("file", type=Path, metavar="FILE", help="the key file to create (refused when it exists)")
    p.set_defaults(handler=cmd_keygen)
    p = s.add_parser("init", help="create the configured store, empty, if it does not exist (workers and the "
                     "dashboard refuse a missing one); exit 0 when it is there", description=INIT_HELP)
    add_gallery_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_init)


def parse_spec(option: str, spec: str, password_file: Path | None, prefix: str) -> StoreConfig:
    """``local:DIR`` or a Redis URL as the store's config; InputError naming the option otherwise."""
    if spec.startswith(LOCAL):
        directory = spec[len(LOCAL):]
        if not directory:
            raise InputError(f"{option}: expected local:DIR, got no directory")
        return LocalStoreConfig(path=Path(directory).expanduser())
    if spec.startswith(("redis://", "rediss://")):
        try:
            return RedisStoreConfig(url=spec, password_file=password_file, prefix=prefix)
        except ValidationError as exc:
            reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise InputError(f"{option}: bad Redis store ({reasons})") from None
    raise InputError(f"{option}: expected local:DIR or redis://HOST:PORT/DB, got {spec.split('://')[0]!r}...")


def _same(a: StoreConfig, b: StoreConfig) -> bool:
    if isinstance(a, LocalStoreConfig) and isinstance(b, LocalStoreConfig):
        return a.directory().resolve() == b.directory().resolve()
    if isinstance(a, RedisStoreConfig) and isinstance(b, RedisStoreConfig):
        return a.describe() == b.describe() and a.prefix == b.prefix
    return False


def _print_report(report: MigrationReport) -> None:
    print(f"migrated {report.source} -> {report.destination} in {report.seconds:.1f} s")
    print(f"  persons {report.persons} ({report.person_faces} faces), negative evidence for {report.negatives} "
          f"({report.negative_faces} faces), visitors {report.visitors} "
          f"({report.visitor_faces} faces), rejections {report.rejections}, merges {report.merges}, "
          f"events {report.events}, crops {report.crops} ({report.crops_missing} named by events but gone from the "
          "source)")
    for old, new in sorted(report.renamed.items()):
        print(f"  renamed {old} -> {new} (events, rejections and merges follow)")
    for c in report.checks:
        print(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: source {c.source}, destination {c.destination}")
    print("not copied (the store interface has no way to):")
    for gap in report.gaps:
        print(f"  - {gap}")
    print("verified: the copy matches" if report.ok else "verification FAILED")


def cmd_migrate(args: argparse.Namespace) -> int:
    source = parse_spec("--from", args.source, args.from_password_file or args.password_file, args.from_prefix)
    target = parse_spec("--to", args.destination, args.to_password_file or args.password_file, args.to_prefix)
    if _same(source, target):
        raise InputError("--from and --to name the same store")
    cfg = config_from(args)
    with open_store(source, cfg.gallery) as src:
        with open_store(target, cfg.gallery, model=src.persons.model, dim=src.persons.dim, create=True) as dst:
            report = migrate(src, dst, progress=lambda line: print(line, file=sys.stderr))
    if args.json:
        print_json(report.to_json())
    else:
        _print_report(report)
    return 0 if report.ok else EXIT_FAILURE


INIT_HELP = """Create the configured store for the configured embedder if it does not exist yet, with nobody enrolled,
so that workers and the dashboard (which refuse a missing store, to catch a wrong path or URL) can start on a new
site: the compose file and the Kubernetes manifests run it before them. An existing store is left as it is (exit
0) when it holds the configured embedder's embeddings; another embedder's store is refused (exit 2)."""


def cmd_init(args: argparse.Namespace) -> int:
    engine = engine_from(args)
    cfg = engine.cfg
    store_cfg = store_config(args, cfg)
    try:
        open_cli_store(args, cfg, engine).close()
        created = False
    except GalleryMissingError:
        with open_cli_store(args, cfg, engine, create=True):
            created = True
    with open_cli_store(args, cfg, engine) as store:
        result = {"store": store.describe(), "created": created, "model": store.persons.model,
                  "persons": len(store.persons.persons()), "encrypted": store_cfg.encryption_key_file is not None}
    if args.json:
        print_json(result)
    else:
        state = "created, empty" if created else f"already there ({result['persons']} person(s))"
        print(f"store {result['store']}: {state}; embedder {result['model']}")
    return 0


REKEY_HELP = """Re-encrypt a store with a new key. The current key is store.encryption_key_file (unset: a plain store,
which this encrypts). Stop the workers and the dashboard first. Local store: every face embedding and crop (one
SQLite transaction per gallery), the index files and every track crop file (each rewritten atomically); a crash
part-way leaves the committed galleries on the new key. Redis store: the store is marked as being rekeyed (every
process refuses it meanwhile), then every face, track crop and preview is rewritten; refused while workers publish
camera statuses. Either way, run the same command again to finish a rekey that stopped part-way, and afterwards set
store.encryption_key_file to the new file on every host. Exit 2 for a wrong or missing key."""


def register_rekey(s: argparse._SubParsersAction) -> None:
    p = s.add_parser("rekey", help="re-encrypt the store with a new key", description=REKEY_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new-key-file", type=Path, required=True, metavar="FILE",
                   help="file holding the new 32-byte key as 64 hex digits")
    add_gallery_arg(p)
    p.add_argument("--json", action="store_true", help="print what was re-encrypted as JSON")
    p.set_defaults(handler=cmd_rekey)


def cmd_rekey(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    store_cfg = store_config(args, cfg)
    new = Cipher(load_key(args.new_key_file), str(args.new_key_file))
    old = Cipher.from_file(store_cfg.encryption_key_file)
    if old is not None and old.check_value == new.check_value:
        raise InputError(f"--new-key-file {args.new_key_file} holds the current key")
    if isinstance(store_cfg, LocalStoreConfig):
        done = rekey_local(store_cfg.directory(), old, new, cfg.gallery)
    else:
        from store.redis.rekey import rekey_redis

        done = rekey_redis(store_cfg, old, new)
    with opened_audit(store_cfg) as trail:
        if trail is not None:
            trail.append(action="rekey", details={k: v for k, v in done.items() if v is not None})
    if args.json:
        print_json(done)
    else:
        print(f"rekeyed {store_cfg.describe()}: " + ", ".join(
            f"{k} {'already on the new key' if v is None else v}" for k, v in done.items()))
        print(f"now set store.encryption_key_file to {args.new_key_file}")
    return 0


KEYGEN_HELP = """Write a new key: 32 random bytes as 64 hex digits and a newline, readable by its owner only (0600),
into FILE, which must not exist (a key is never overwritten: a lost encryption key loses the store, a changed audit key
fails the audit chain). The deploy steps make both keys with it: store.encryption_key_file (encryption at rest) and
store.audit_key_file (the keyed audit chain); keep the audit key apart from the store. Exit 2 when FILE exists or
cannot be written."""


def cmd_keygen(args: argparse.Namespace) -> int:
    path: Path = args.file
    text = (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{path} exists: a key is never overwritten (remove it first if it is really "
                         "unused)") from None
    except OSError as exc:
        raise InputError(f"cannot create the key file {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise InputError(f"cannot write the key file {path}: {exc.strerror or exc}") from None
    print(f"wrote a new {KEY_BYTES}-byte key to {path}")
    return 0
