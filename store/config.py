"""Store settings: which backend keeps the gallery, visitors, crops, events and live tracks (``store.type``), the
gallery's search index, visitors, and how long each kind of data is kept (``retention``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, Tag

from shared.schema import Section, type_discriminator

APP_NAME = "argusnet"


def default_store_dir() -> Path:
    """Where the local store lives when no path is configured: the user data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "gallery"


class LocalStoreConfig(Section):
    type: Literal["local"] = Field(default="local", description="One directory on this host: SQLite (persons, "
                                   "visitors, events, live tracks), the FAISS index file and crop files. Workers "
                                   "on this host share it; it must not be on a network filesystem.")
    path: Path | None = Field(default=None, description="The store directory (what `--gallery DIR` names); empty = "
                              "the user data directory.")

    def directory(self) -> Path:
        return self.path if self.path is not None else default_store_dir()

    def describe(self) -> str:
        return str(self.directory())


StoreConfig = Annotated[Annotated[LocalStoreConfig, Tag("local")], type_discriminator("local")]


class GalleryConfig(Section):
    hnsw_above: int = Field(default=50_000, ge=1, le=1_000_000_000,
                            description="Use an HNSW index once the gallery holds more than this many faces; "
                            "below it search is exact.")
    hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW graph degree (more = better recall, more memory).")
    hnsw_ef_construction: int = Field(default=80, ge=8, le=4096, description="HNSW build-time candidate list.")
    hnsw_ef_search: int = Field(default=128, ge=1, le=4096,
                                description="HNSW query-time candidate list (more = better recall, slower; 128 gives "
                                "recall@1 0.998 at 0.8 ms on 1M faces, see BENCHMARKS.md).")

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


class RetentionConfig(Section):
    interval_s: float = Field(default=60.0, gt=0.0, le=86_400.0,
                              description="How often the retention job runs (in every worker; it is idempotent, so "
                              "workers sharing a store may all run it).")
    crops_h: float = Field(default=24.0, gt=0.0, le=87_600.0,
                           description="Track crops (the best face of each ended track) are deleted after this "
                           "many hours.")
    events_days: float = Field(default=30.0, gt=0.0, le=3650.0,
                               description="Events in the event log are deleted after this many days.")
    live_ttl_s: float = Field(default=5.0, gt=0.0, le=3600.0,
                              description="A live track that its worker has not refreshed for this long is no "
                              "longer live (a worker that died leaves no ghost tracks).")
