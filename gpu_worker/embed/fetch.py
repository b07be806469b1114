"""Download a model file named by its card, verified by sha256 and put in place atomically.

The bytes go to a hidden temporary file in the destination folder, are hashed while they arrive, and are
renamed onto ``<card name>.onnx`` only when the hash matches; on any failure the temporary file is removed,
so a partial or wrong file is never left where a loader would find it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

import platformdirs

from gpu_worker.embed.cards import ModelCard
from shared.errors import ModelError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
APP_NAME = "argusnet"


def default_models_dir() -> Path:
    """The per-user folder for downloaded models (platformdirs user data dir of ``argusnet``, then ``models``)."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "models"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(card: ModelCard, sha256: str | None) -> str:
    """The hash a file for ``card`` must have: the explicit one, else the card's; ``ModelError`` if neither."""
    chosen = sha256 if sha256 is not None else card.sha256
    if chosen is None:
        raise ModelError(f"model card {card.name} publishes no sha256; pass the sha256 of your file explicitly "
                         "(embedder.sha256 in the configuration, or --sha256)")
    chosen = chosen.strip().lower()
    if len(chosen) != 64 or any(c not in "0123456789abcdef" for c in chosen):
        raise ModelError(f"sha256 for model {card.name} must be 64 hex digits, got {sha256!r}")
    if card.sha256 is not None and chosen != card.sha256:
        log.warning("model %s: using the explicit sha256 %s instead of the card's %s", card.name, chosen, card.sha256)
    return chosen


def fetch_model(card: ModelCard, dest_dir: str | os.PathLike[str], url: str | None = None,
                sha256: str | None = None, timeout: float = 60.0) -> Path:
    """``dest_dir/<card.name>.onnx``, downloaded from ``url`` (default ``card.url``) unless a file with the
    expected sha256 is already there. ``ModelError`` on HTTP/network errors and on a checksum mismatch."""
    want = expected_sha256(card, sha256)
    dest = Path(dest_dir)
    target = dest / f"{card.name}.onnx"
    if target.is_file():
        have = sha256_file(target)
        if have == want:
            log.info("model %s already present at %s", card.name, target)
            return target
        log.warning("model file %s has sha256 %s, expected %s: downloading it again", target, have, want)
    source = url if url is not None else card.url
    if source is None:
        raise ModelError(f"model card {card.name} has no download URL; pass one explicitly")
    if not source.startswith(("http://", "https://")):
        raise ModelError(f"model URL must be http(s), got {source!r}")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create model folder {dest}: {exc}") from exc
    _download_verified(source, target, want, timeout)
    log.info("model %s downloaded from %s to %s", card.name, source, target)
    return target


def _download_verified(url: str, target: Path, want: str, timeout: float) -> None:
    """Stream ``url`` into a temporary file beside ``target``, check its hash, then rename it onto ``target``."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            have = _stream(url, out, timeout)
            out.flush()
            os.fsync(out.fileno())
        if have != want:
            raise ModelError(f"download of {url} has sha256 {have}, expected {want}; nothing was kept")
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(f"cannot write model file {target}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, timeout: float) -> str:
    """Copy the response body of ``url`` into ``out``; returns its sha256. HTTP/network errors -> ``ModelError``."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(CHUNK), b""):
                digest.update(block)
                out.write(block)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ModelError(f"download of {url} failed: {exc.reason}") from exc
    except TimeoutError as exc:
        raise ModelError(f"download of {url} timed out after {timeout} s") from exc
    except (http.client.HTTPException, ConnectionError) as exc:
        raise ModelError(f"download of {url} broke off: {exc!r}") from exc
    return digest.hexdigest()
