"""The package layers hold: a package imports only those below it (pyproject.toml's
[tool.importlinter] contract), so the training <-> sweeps circle cannot come back."""

from __future__ import annotations

import shutil
import subprocess

from conftest import ROOT


def test_packages_import_only_the_layers_below_them():
    lint = shutil.which("lint-imports")
    assert lint, 'lint-imports is missing: pip install -e ".[dev]"'
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in proc.stdout
