"""`argusnet dashboard [--listen HOST:PORT]` and `argusnet dashboard user add|remove|list`."""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from argusnet.commands.common import add_gallery_arg, config_from, print_json, store_config
from argusnet.config import ArgusConfig
from store import opened_audit
from store.config import LocalStoreConfig, StoreConfig, default_store_dir
# set-up files a gallery can be created among
from store.local.gallery import REVOKED_FILE, SESSION_KEY_FILE, USERS_FILE

if TYPE_CHECKING:
    from dashboard.context import CliCommand


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the web dashboard (live tracks, recognitions, identities), or "
                       "manage its users")
    p.add_argument("--listen", metavar="HOST:PORT", default=None, help="where to serve (default: dashboard.listen, "
                   "127.0.0.1:8080)")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_dashboard)
    users = p.add_subparsers(dest="dashboard_command", metavar="ACTION")
    u = users.add_parser("user", help="add, remove or list dashboard users").add_subparsers(
        dest="user_command", metavar="ACTION", required=True)
    a = u.add_parser("add", help="add a user (the password is read from a file, never from the command line)")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=("admin", "viewer"))
    a.add_argument("--password-file", required=True, type=Path, metavar="FILE",
                   help="file whose first line is the password (12 characters or more)")
    a.add_argument("--replace", action="store_true", help="replace the user's role and password if it exists "
                   "(their sessions end: they log in again)")
    add_gallery_arg(a)
    a.set_defaults(handler=cmd_user_add)
    r = u.add_parser("remove", help="remove a user (their sessions, and their live stream, end at once)")
    r.add_argument("name")
    add_gallery_arg(r)
    r.set_defaults(handler=cmd_user_remove)
    ls = u.add_parser("list", help="every user and role")
    ls.add_argument("--json", action="store_true", help="print JSON")
    add_gallery_arg(ls)
    ls.set_defaults(handler=cmd_user_list)


def users_path(cfg: ArgusConfig, store: StoreConfig) -> Path:
    """``dashboard.users_file``; else beside a local store's data, or in the user data directory (a Redis store:
    set it explicitly on a site where dashboards run on other hosts)."""
    if cfg.dashboard.users_file is not None:
        return cfg.dashboard.users_file
    if isinstance(store, LocalStoreConfig):
        return store.directory() / USERS_FILE
    return default_store_dir().parent / USERS_FILE


def session_key_path(cfg: ArgusConfig, store: StoreConfig) -> Path:
    if cfg.dashboard.session_key_file is not None:
        return cfg.dashboard.session_key_file
    return users_path(cfg, store).parent / SESSION_KEY_FILE


def revoked_path(cfg: ArgusConfig, store: StoreConfig) -> Path:
    """``dashboard.revoked_file``; else beside the users file."""
    if cfg.dashboard.revoked_file is not None:
        return cfg.dashboard.revoked_file
    return users_path(cfg, store).parent / REVOKED_FILE


def audit_change(store: StoreConfig, action: str, **details: object) -> None:
    """An audit record of a user change, in the store's audit log (none yet when the store does not exist: the
    first enrolment creates it)."""
    with opened_audit(store) as trail:
        if trail is not None:
            trail.append(action=action, details=dict(details))


def _user_file(args: argparse.Namespace):
    from dashboard.users import UserFile

    cfg = config_from(args)
    store = store_config(args, cfg)
    return UserFile(users_path(cfg, store)), store


def cmd_user_add(args: argparse.Namespace) -> int:
    from dashboard.users import read_password_file

    users, store = _user_file(args)
    user = users.add(args.name, args.role, read_password_file(args.password_file), replace=args.replace)
    audit_change(store, "user_add", user=user.name, role=user.role)
    print(f"dashboard user {user.name} ({user.role}) saved in {users.path}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    users, store = _user_file(args)
    users.remove(args.name)
    audit_change(store, "user_remove", user=args.name)
    print(f"dashboard user {args.name} removed from {users.path}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    users, _store = _user_file(args)
    rows = [{"name": u.name, "role": u.role} for u in sorted(users.users().values(), key=lambda u: u.name)]
    if args.json:
        print_json({"users": rows, "file": str(users.path)})
    else:
        print(f"{len(rows)} user(s) in {users.path}")
        for row in rows:
            print(f"  {row['name']} ({row['role']})")
    return 0


def ensure_admin(cfg: ArgusConfig, store: StoreConfig) -> tuple[str, str] | None:
    """With no dashboard user yet, an ``admin`` with a random password (for `argusnet up`, printed once); None
    when there are users already."""
    from dashboard.users import UserFile

    users = UserFile(users_path(cfg, store))
    if users.users():
        return None
    password = secrets.token_urlsafe(15)
    users.add("admin", "admin", password)
    audit_change(store, "user_add", user="admin", role="admin", made_by="argusnet up")
    return "admin", password


def cli_command(args: argparse.Namespace) -> CliCommand:
    """`argusnet` on this dashboard's store, for the actions it runs as commands (enrol, "not this person")."""
    from dashboard.context import CliCommand  # the web stack loads only when the dashboard runs

    base = [sys.executable, "-m", "argusnet"] + (["--config", str(args.config)] if args.config is not None else [])
    gallery = getattr(args, "gallery", None)
    return CliCommand(tuple(base), ("--gallery", str(gallery)) if gallery is not None else ())


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard.main import run_dashboard

    cfg = config_from(args)
    store = store_config(args, cfg)
    listen = args.listen or cfg.dashboard.listen
    return run_dashboard(cfg.dashboard.model_copy(update={"listen": listen}), store, cfg.gallery,
                         users_path(cfg, store), session_key_path(cfg, store), [c.id for c in cfg.up.cameras],
                         cli_command(args), revoked_path(cfg, store))
