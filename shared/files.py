"""Writing files so that a reader (another process included) sees the old content or the new, never a part."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes, durable: bool = False) -> None:
    """Write ``data`` to a uniquely named temporary file beside ``path``, then rename it onto ``path``.

    Unique names let several processes write the same file at once (the last rename wins, each file whole).
    ``durable`` fsyncs before the rename. On any failure the temporary file is removed and the error raised."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
