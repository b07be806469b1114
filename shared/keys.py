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
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from shared.errors import ConfigError, InputError
from shared.ids import ID_PATTERN, ID_RULE, is_valid_id
from shared.schema import Section


MAX_BOUND_KEYS = 1024  # keys named in security.camera_keys
MAX_IDS_PER_KEY = 256  # camera ids one key may send as (a node, or `argusnet up`, running several cameras)

CameraId = Annotated[str, StringConstraints(pattern=f"^{ID_PATTERN}$")]


class SecurityConfig(Section):
    curve: bool = Field(default=False, description="CurveZMQ on every broker socket: cameras (5555), workers (5556) "
                        "and events (5557, 5558) are encrypted, and each accepts only the keys of its allow-list.")
    broker_secret_key: Path | None = Field(default=None, description="Broker's secret key file (from `argusnet keys "
                                           "gen`); required when curve is on.")
    broker_public_key: Path | None = Field(default=None, description="Broker's public key file, given to cameras, "
                                           "workers and event subscribers.")
    allowed_keys_dir: Path | None = Field(default=None, description="Folder of camera public key files the broker "
                                          "accepts; any other key is refused, logged and counted. A key sends as the "
                                          "camera id of its file name (cam-front.key: camera cam-front) unless "
                                          "camera_keys names it.")
    camera_keys: dict[CameraId, list[CameraId]] = Field(
        default_factory=dict, max_length=MAX_BOUND_KEYS,
        description="Camera ids a camera key may send as, by key name (its file name in allowed_keys_dir without "
        "`.key`): `{site-cameras: [entrance, hall]}`. A key named here sends only as these ids, any other key only "
        "as its file name; a frame or heartbeat under another id is refused and counted "
        "(argusnet_auth_refused_total{reason=\"camera_id_mismatch\"}). One id belongs to one key.")
    worker_keys_dir: Path | None = Field(default=None, description="Folder of worker public key files the broker "
                                         "accepts on its worker socket (5556); required when curve is on.")
    publisher_keys_dir: Path | None = Field(default=None, description="Folder of the public key files the broker "
                                            "accepts on its events-in socket (5557, event publishers); empty: "
                                            "worker_keys_dir (workers publish the events).")
    subscriber_keys_dir: Path | None = Field(default=None, description="Folder of the public key files the broker "
                                             "accepts on its events-out socket (5558: `argusnet events`, other event "
                                             "consumers); empty: no subscriber is accepted.")
    camera_secret_key: Path | None = Field(default=None, description="This camera's secret key file (camera side).")
    worker_secret_key: Path | None = Field(default=None, description="This worker's secret key file (worker side); "
                                           "its public key goes into the broker's worker_keys_dir.")
    subscriber_secret_key: Path | None = Field(default=None, description="An event subscriber's secret key file "
                                               "(`argusnet events`); its public key goes into the broker's "
                                               "subscriber_keys_dir.")

    @field_validator("camera_keys")
    @classmethod
    def _one_key_per_id(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        owner: dict[str, str] = {}
        for key, ids in value.items():
            if not 1 <= len(ids) <= MAX_IDS_PER_KEY:
                raise ValueError(f"key {key!r}: give 1..{MAX_IDS_PER_KEY} camera ids, got {len(ids)}")
            for camera in ids:
                if owner.setdefault(camera, key) != key:
                    raise ValueError(f"camera id {camera!r} is given to two keys: {owner[camera]!r} and {key!r}")
        return value


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


@dataclass(frozen=True)
class CurveClient:
    """A CURVE client's keys: its own pair and the broker's public key."""

    public: bytes
    secret: bytes
    server: bytes

    def apply(self, sock: zmq.Socket) -> zmq.Socket:
        """Make ``sock`` a CURVE client of the broker (before it connects)."""
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = self.public, self.secret, self.server
        return sock


def curve_client(security: SecurityConfig, secret_key: Path | None, role: str) -> CurveClient | None:
    """The keys a ``role`` (camera, worker, subscriber) connects with when ``security.curve`` is on (None when it
    is off): its pair from ``secret_key`` and the broker's ``security.broker_public_key``. ConfigError naming the
    settings when one is missing, InputError when a file cannot be read."""
    if not security.curve:
        return None
    if secret_key is None or security.broker_public_key is None:
        raise ConfigError(f"security.curve is on: security.{role}_secret_key and security.broker_public_key must "
                          "name key files (`argusnet keys gen`)")
    keys = load_secret_key(secret_key)
    return CurveClient(public=keys.public, secret=keys.secret, server=load_public_key(security.broker_public_key))
