"""Dashboard users: name, role (``viewer`` or ``admin``) and an argon2id hash of the password, kept in one JSON file
(mode 0600, replaced atomically), written by `argusnet dashboard user add|remove`.

A file rather than the store: a site (or a Kubernetes Secret) can hold it apart from the biometric data, and the
dashboard needs nothing else to check a login. The dashboard re-reads it when it changes, so a user added or
removed on the command line takes effect at the next request without a restart."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.errors import InputError
from shared.files import atomic_write

ROLES = ("viewer", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 12
FORMAT = 1
_HASHER = PasswordHasher()  # argon2id with argon2-cffi's RFC 9106 low-memory defaults
# A hash to verify against when the user does not exist, so that a login for an unknown name takes as long
_DUMMY_HASH = _HASHER.hash("argusnet-no-such-user")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InputError(f"user name: expected 1-64 letters, digits or _ . @ -, got {name!r}")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"password: expected at least {MIN_PASSWORD} characters, got {len(password)}")
    return password


def read_password_file(path: Path) -> str:
    """The password in ``path`` (its first line, without the line end)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--password-file {path}: cannot read it ({exc})") from exc
    lines = text.splitlines()
    return check_password(lines[0] if lines else "")


class UserFile:
    """The users of one dashboard, in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple[int, int], dict[str, User]] | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def users(self) -> dict[str, User]:
        """Every user by name (none when the file does not exist); re-read when the file changed."""
        stamp = self._stamp()
        if stamp is None:
            return {}
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            users = {u["name"]: User(u["name"], u["role"], u["hash"]) for u in data["users"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"dashboard users file {self.path} is not readable ({exc}); fix or remove it and "
                             "add the users again") from exc
        self._cache = (stamp, users)
        return users

    def _write(self, users: dict[str, User]) -> None:
        body = {"format": FORMAT, "users": [{"name": u.name, "role": u.role, "hash": u.hash}
                                            for u in sorted(users.values(), key=lambda u: u.name)]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o077)  # the file is 0600 from its first byte (it holds password hashes)
        try:
            atomic_write(self.path, json.dumps(body, indent=1).encode(), durable=True)
        finally:
            os.umask(old)
        self._cache = None

    def add(self, name: str, role: str, password: str, replace: bool = False) -> User:
        check_name(name)
        if role not in ROLES:
            raise InputError(f"--role: expected one of {', '.join(ROLES)}, got {role!r}")
        check_password(password)
        users = dict(self.users())
        if name in users and not replace:
            raise InputError(f"user {name!r} exists already (remove it first, or give --replace)")
        users[name] = User(name, role, _HASHER.hash(password))
        self._write(users)
        return users[name]

    def remove(self, name: str) -> None:
        users = dict(self.users())
        if name not in users:
            raise InputError(f"no dashboard user {name!r} in {self.path}")
        del users[name]
        self._write(users)

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is right, else None (as slow for an unknown name as for a wrong password)."""
        user = self.users().get(name)
        try:
            _HASHER.verify(user.hash if user is not None else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user
