"""The package layering in pyproject.toml ([tool.importlinter]) holds: shared is the bottom, camera_node, tracker and
store stay independent of the worker, and no component imports the composition root (argusnet)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# importlinter.cli has no __main__ block, so run its click command; --no-cache leaves no .import_linter_cache behind
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_import_contracts_are_kept():
    if importlib.util.find_spec("importlinter") is None:
        pytest.fail("import-linter is not installed: install the test extras (pip install -e '.[test]')")
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-c", LINT, str(REPO / "pyproject.toml"), "--no-cache", "--no-logo"],
                          cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"import contracts broken (lint-imports exit {proc.returncode}):\n{output}"
    assert "KEPT" in output and " 0 broken" in output, f"lint-imports checked no contracts:\n{output}"
