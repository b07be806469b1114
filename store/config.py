"""Store settings: which backend keeps the gallery, visitors, crops, events and live tracks (``store.type``), the
gallery's search index, visitors, and how long each kind of data is kept (``retention``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import SplitResult, urlsplit

import platformdirs
from pydantic import Field, Tag, field_validator, model_validator

from shared.ids import ID_RULE, is_valid_id
from shared.schema import Section, type_discriminator

APP_NAME = "argusnet"


def default_store_dir() -> Path:
    """Where the local store lives when no path is configured: the user data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "gallery"


KEY_FILE_HELP = ("A file holding a 32-byte key as 64 hex digits: embeddings, face crops, the index file and track "
                 "crops are stored encrypted with AES-256-GCM. Fixed when the store is created (a store made "
                 "without it refuses one, and the reverse); change it with `argusnet store rekey`.")


AUDIT_KEY_HELP = ("A file holding the audit key, 32 random bytes as 64 hex digits (`argusnet store keygen FILE` "
                  "makes one), kept apart from the store: each audit record's chain hash is then an HMAC under it, "
                  "so `argusnet audit verify` finds a rewritten log even when the hashes were recomputed. Empty = "
                  "the chain is plain SHA-256, which only finds accidents (verify says the chain is unkeyed). "
                  "Every process of the site needs the same file; never defaulted.")


MAX_EVENT_FILES = 64
EVENT_FILES_HELP = ("The JSONL event files this site keeps (what `argusnet events --jsonl FILE`, `argusnet up "
                    "--events-jsonl FILE` and `argusnet track --events-jsonl FILE` append to): `argusnet forget` "
                    f"rewrites each, atomically, without the lines naming the person, and reports each file. At most "
                    f"{MAX_EVENT_FILES}; a file that does not exist is reported and skipped.")


class LocalStoreConfig(Section):
    type: Literal["local"] = Field(default="local", description="One directory on this host: SQLite (persons, "
                                   "visitors, events, live tracks), the FAISS index file and crop files. Workers "
                                   "on this host share it; it must not be on a network filesystem.")
    path: Path | None = Field(default=None, description="The store directory (what `--gallery DIR` names); empty = "
                              "the user data directory.")
    encryption_key_file: Path | None = Field(default=None, description=KEY_FILE_HELP)
    audit_key_file: Path | None = Field(default=None, description=AUDIT_KEY_HELP + " It must not be inside "
                                        "the store directory.")
    event_files: list[Path] = Field(default_factory=list, max_length=MAX_EVENT_FILES, description=EVENT_FILES_HELP)

    def directory(self) -> Path:
        return self.path if self.path is not None else default_store_dir()

    def describe(self) -> str:
        return str(self.directory())


REDIS_SCHEMES = ("redis", "rediss")


def _split_redis_url(url: str) -> SplitResult:
    """The parts of a ``redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`` URL; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(f"expected a redis://HOST:PORT/DB or rediss://HOST:PORT/DB URL, got scheme "
                         f"{parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("the URL names no host (redis://HOST:PORT/DB)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if port == 0:
        raise ValueError("bad port: 0")
    db = parts.path.lstrip("/")
    if parts.path not in ("", "/") and not (db.isdigit() and "/" not in db):
        raise ValueError(f"the database must be a number (redis://HOST:PORT/DB), got {parts.path!r}")
    if parts.query or parts.fragment:
        raise ValueError("options in the URL are not read: use the store section's fields")
    return parts


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RedisStoreConfig(Section):
    type: Literal["redis"] = Field(default="redis", description="A Redis server (7 or later) holds persons, "
                                   "visitors, crops, events and live tracks, shared by workers on any host; each "
                                   "process searches its own in-memory FAISS replica of the gallery.")
    url: str = Field(description="redis://HOST:PORT/DB (rediss:// for TLS). A server off loopback needs a "
                     "password: put it in password_file, not here.")
    password_file: Path | None = Field(default=None, description="A file holding the Redis password (its first "
                                       "line); required for a server off loopback, never defaulted.")
    prefix: str = Field(default="argusnet", description=f"Key namespace: every key is PREFIX:...; {ID_RULE}. "
                        "Stores sharing one Redis database need different prefixes.")
    socket_timeout_s: float = Field(default=5.0, gt=0.0, le=120.0, description="Connect and reply timeout of "
                                    "each Redis command: a dead server fails an operation after this long.")
    worker_socket_timeout_s: float = Field(default=0.5, ge=0.05, le=1.0, description="Connect and reply timeout of "
                                           "a worker's Redis commands (socket_timeout_s is the CLI's and the "
                                           "dashboard's): they run on the frame path, so a hung server costs a "
                                           "batch at most about this long, far below the 2 s after which a worker "
                                           "takes itself for paused and drops its work; the worker then buffers its "
                                           "writes and tries again later.")
    encryption_key_file: Path | None = Field(default=None, description=KEY_FILE_HELP + " On Redis: embeddings "
                                             "and crops of both galleries, track crops and camera previews; every "
                                             "process of the site needs the same key file.")
    audit_key_file: Path | None = Field(default=None, description=AUDIT_KEY_HELP)
    event_files: list[Path] = Field(default_factory=list, max_length=MAX_EVENT_FILES, description=EVENT_FILES_HELP)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        _split_redis_url(url)
        return url

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if not is_valid_id(prefix):
            raise ValueError(f"expected {ID_RULE}")
        return prefix

    @model_validator(mode="after")
    def _check_password(self) -> "RedisStoreConfig":
        parts = _split_redis_url(self.url)
        if parts.password is not None and self.password_file is not None:
            raise ValueError("the URL holds a password and password_file is set: give it once, in password_file")
        if parts.password is None and self.password_file is None and not _is_loopback(parts.hostname or ""):
            raise ValueError(f"Redis at {parts.hostname} is off loopback: set store.password_file (a file holding "
                             "the server's password)")
        return self

    def for_worker(self) -> "RedisStoreConfig":
        """The settings a worker opens the store with: its short timeout on every command."""
        return self.model_copy(update={"socket_timeout_s": min(self.socket_timeout_s, self.worker_socket_timeout_s)})

    def describe(self) -> str:
        """The URL without its password (for logs and messages)."""
        parts = _split_redis_url(self.url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        return parts._replace(netloc=netloc).geturl()


StoreConfig = Annotated[Annotated[LocalStoreConfig, Tag("local")] | Annotated[RedisStoreConfig, Tag("redis")],
                        type_discriminator("local")]


class GalleryConfig(Section):
    hnsw_above: int = Field(default=50_000, ge=1, le=1_000_000_000,
                            description="Use an HNSW index once the gallery holds more than this many faces; "
                            "below it search is exact.")
    hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW graph degree (more = better recall, more memory).")
    hnsw_ef_construction: int = Field(default=80, ge=8, le=4096, description="HNSW build-time candidate list.")
    hnsw_ef_search: int = Field(default=128, ge=1, le=4096,
                                description="HNSW query-time candidate list (more = better recall, slower; 128 gives "
                                "recall@1 0.998 at 0.8 ms on 1M faces, see BENCHMARKS.md).")

class StoreBufferConfig(Section):
    """How many writes of each kind a worker keeps while its store is unavailable (store.buffered); beyond it the
    oldest of that kind is dropped and counted in argusnet_store_dropped_total{kind}."""

    events: int = Field(default=10_000, ge=1, le=10_000_000, description="Events waiting for the event log.")
    live_tracks: int = Field(default=2_000, ge=1, le=10_000_000, description="Live-track puts and removals waiting "
                             "(a put that waited longer than its TTL is not written).")
    crops: int = Field(default=500, ge=1, le=1_000_000, description="Track crops waiting (each tens of kB).")
    visitors: int = Field(default=1_000, ge=1, le=1_000_000, description="Visitor updates (seen, merged) waiting "
                          "(each may hold a track's best faces).")

    def of(self, kind: str) -> int:
        return int(getattr(self, kind))


class VisitorConfig(Section):
    enabled: bool = Field(default=True, description="Give tracks that match nobody a provisional `visitor-N` "
                          "identity, shared across tracks and cameras of a worker.")
    retention_h: float = Field(default=24.0, gt=0.0, le=8760.0,
                               description="A visitor not seen for this many hours is forgotten.")
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="Similarity needed to match a visitor; empty = the embedder's "
                                    "calibrated threshold (as for enrolled people).")
    max_faces: int = Field(default=5, ge=1, le=100,
                           description="Best faces kept per visitor (more = better re-identification, slower search).")
    min_face_px: int = Field(default=40, ge=0, le=4096,
                             description="A track becomes a visitor only once a face of it this large (shorter box "
                             "side, px) was embedded: a visitor is an enrolment the system makes, so it needs the "
                             "face an enrolment needs (quality.min_face_px); smaller strangers' embeddings match "
                             "each other (`eval track --face-height 40`: two strangers shared one visitor id). "
                             "Smaller tracks are followed, and named when they match an enrolled person.")


class RetentionConfig(Section):
    interval_s: float = Field(default=60.0, gt=0.0, le=86_400.0,
                              description="How often the retention job runs (in every worker; it is idempotent, so "
                              "workers sharing a store may all run it).")
    crops_h: float = Field(default=24.0, gt=0.0, le=87_600.0,
                           description="Track crops (the best face of each ended track) are deleted after this "
                           "many hours.")
    media_budget_bytes: int = Field(default=2 * 1024 ** 3, ge=0, le=2 ** 50,
                                    description="Disk (or Redis memory) the track crops may take together, in bytes "
                                    "(default 2 GiB); above it each retention run deletes the oldest crops first "
                                    "until they fit, counted as kind crops_budget. 0 keeps no crops.")
    events_days: float = Field(default=30.0, gt=0.0, le=3650.0,
                               description="Events in the event log are deleted after this many days.")
    live_ttl_s: float = Field(default=5.0, gt=0.0, le=3600.0,
                              description="A live track that its worker has not refreshed for this long is no "
                              "longer live (a worker that died leaves no ghost tracks).")
