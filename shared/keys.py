"""CurveZMQ key files: make a key pair (``argusnet keys gen NAME --dir DIR``) and read a folder of public keys
(the broker's allow-list of camera nodes).

Key files are ZeroMQ's own certificate format (``zmq.auth.create_certificates``): ``NAME.key`` holds the public
key, ``NAME.key_secret`` the public and the secret key. Keys are Z85 text (40 characters).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from pydantic import Field

from shared.errors import InputError
from shared.ids import ID_RULE, is_valid_id
from shared.schema import Section


class SecurityConfig(Section):
    curve: bool = Field(default=False, description="Encrypt and authenticate camera connections with CurveZMQ.")
    broker_secret_key: Path | None = Field(default=None, description="Broker's secret key file (from `argusnet keys "
                                           "gen`); required when curve is on.")
    broker_public_key: Path | None = Field(default=None, description="Broker's public key file, given to cameras.")
    allowed_keys_dir: Path | None = Field(default=None, description="Folder of camera public key files the broker "
                                          "accepts; any other key is refused, logged and counted.")
    camera_secret_key: Path | None = Field(default=None, description="This camera's secret key file (camera side).")


PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


@dataclass(frozen=True)
class KeyFiles:
    """Where a key pair was written: ``public`` (NAME.key, to share) and ``secret`` (NAME.key_secret, to keep)."""

    public: Path
    secret: Path


@dataclass(frozen=True)
class KeyPair:
    """Z85 CurveZMQ keys, named so the two can never be swapped by position."""

    public: bytes
    secret: bytes


def generate_keys(name: str, directory: str | Path) -> KeyFiles:
    """Create the key pair ``NAME.key`` / ``NAME.key_secret`` in ``directory`` (made if missing).

    Refuses to overwrite an existing pair (a camera would lose access) and makes the secret file readable by its
    owner only.
    """
    if not isinstance(name, str) or not is_valid_id(name):
        raise InputError(f"key name must be {ID_RULE}, got {name!r}")
    if not zmq.has("curve"):
        raise InputError("this ZeroMQ build has no CURVE support: cannot make keys")
    folder = Path(directory)
    public, secret = folder / (name + PUBLIC_SUFFIX), folder / (name + SECRET_SUFFIX)
    for path in (public, secret):
        if path.exists():
            raise InputError(f"key file {path} already exists; remove it first or choose another name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
        os.chmod(made_secret, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write key files in {folder}: {exc}") from exc
    return KeyFiles(public=Path(made_public), secret=Path(made_secret))


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key in a ``.key`` or ``.key_secret`` file."""
    try:
        public, _secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read a CurveZMQ key from {path}: {exc}") from exc
    return public


def load_secret_key(path: str | Path) -> KeyPair:
    """The Z85 key pair in a ``.key_secret`` file; an error if the file holds no secret key."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read a CurveZMQ key from {path}: {exc}") from exc
    if not secret:
        raise InputError(f"{path} holds no secret key (expected a {SECRET_SUFFIX} file from `argusnet keys gen`)")
    return KeyPair(public=public, secret=secret)


def load_public_keys(directory: str | Path) -> dict[bytes, str]:
    """The allow-list: every public key in the ``*.key`` files of ``directory``, mapped to its file's name.

    A missing folder is an error; an empty one gives an empty allow-list (every node is refused).
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise InputError(f"allowed keys folder {folder} does not exist or is not a folder")
    keys: dict[bytes, str] = {}
    for path in sorted(folder.glob("*" + PUBLIC_SUFFIX)):
        keys[load_public_key(path)] = path.name[: -len(PUBLIC_SUFFIX)]
    return keys
