"""Pieces shared by the CLI commands: configuration, the engine, the default gallery directory, output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import platformdirs

from gpu_worker.engine import Engine
from shared.config import ArgusConfig, load_config
from shared.ids import ID_RULE, is_valid_id

APP_NAME = "argusnet"


def process_id(value: str) -> str:
    """argparse type for camera and worker ids (they name folders and travel on the wire)."""
    if not is_valid_id(value):
        raise argparse.ArgumentTypeError(f"must be {ID_RULE}, got {value!r}")
    return value


def default_gallery_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "gallery"


def add_gallery_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", metavar="DIR", type=Path, default=None,
                        help=f"gallery directory (default: {default_gallery_dir()})")


def gallery_dir(args: argparse.Namespace) -> Path:
    return args.gallery if args.gallery is not None else default_gallery_dir()


def config_from(args: argparse.Namespace) -> ArgusConfig:
    return load_config(args.config)


def engine_from(args: argparse.Namespace) -> Engine:
    return Engine(config_from(args))


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def round_or_none(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
