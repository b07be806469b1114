"""Pieces shared by the CLI commands: configuration, the engine, the store (``--gallery DIR`` or ``store``), output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from argusnet.config import ArgusConfig, load_config
from gpu_worker.engine import Engine
from shared.ids import ID_RULE, is_valid_id
from shared.zmq_defaults import parse_endpoints
from store import open_store
from store.base import Store
from store.config import LocalStoreConfig, StoreConfig, default_store_dir


def process_id(value: str) -> str:
    """argparse type for camera and worker ids (they name folders and travel on the wire)."""
    if not is_valid_id(value):
        raise argparse.ArgumentTypeError(f"must be {ID_RULE}, got {value!r}")
    return value


def endpoint_list(value: str) -> tuple[str, ...]:
    """argparse type for ``ENDPOINT[,ENDPOINT...]`` (several brokers)."""
    try:
        return parse_endpoints(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_gallery_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", metavar="DIR", type=Path, default=None,
                        help=f"local store directory, the same as store: {{type: local, path: DIR}} (default: the "
                        f"configured store, else {default_store_dir()})")


def store_config(args: argparse.Namespace, cfg: ArgusConfig) -> StoreConfig:
    """``--gallery DIR`` wins, then the ``store`` section; ``up.gallery`` names a local store's directory when
    ``store.path`` is not set (configs written before the store section)."""
    keys = {"encryption_key_file": cfg.store.encryption_key_file,  # the configured keys open a directory named here
            "audit_key_file": cfg.store.audit_key_file, "event_files": cfg.store.event_files}
    if getattr(args, "gallery", None) is not None:
        return LocalStoreConfig(path=args.gallery, **keys)
    if cfg.store.type == "local" and cfg.store.path is None and cfg.up.gallery is not None:
        return LocalStoreConfig(path=cfg.up.gallery, **keys)
    return cfg.store


def open_cli_store(args: argparse.Namespace, cfg: ArgusConfig, engine: Engine | None = None,
                   create: bool = False) -> Store:
    """The store a command works on; with ``engine``, a gallery of another embedder is refused (and ``create``
    makes an empty store for it)."""
    model = None if engine is None else engine.embedder.name
    dim = None if engine is None else engine.embedder.dim
    return open_store(store_config(args, cfg), cfg.gallery, model=model, dim=dim, create=create)


def config_from(args: argparse.Namespace) -> ArgusConfig:
    return load_config(args.config)


def engine_from(args: argparse.Namespace) -> Engine:
    return Engine(config_from(args))


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def round_or_none(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
