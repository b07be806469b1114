"""The one rule for names that travel between processes and become file or folder names: camera ids, process
ids, key names, model names. A name starts with a letter, digit or underscore, so that ``.``, ``..``, hidden
files and option-like ``-x`` are impossible, then has up to 63 more of letters, digits, ``_``, ``.`` and ``-``."""

from __future__ import annotations

import re

MAX_ID_LEN = 64
ID_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}" % (MAX_ID_LEN - 1)
ID_RULE = f"1..{MAX_ID_LEN} characters of [A-Za-z0-9_.-], the first one not '.' or '-'"
ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None
