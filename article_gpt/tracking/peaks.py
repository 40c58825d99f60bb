"""The cache of this machine's measured CPU peak, read without torch (tracking/mfu.py measures and
writes it; the sweep plan, sweeps/plan.py, reads it before anything runs).

One JSON file per machine and user: one entry per CPU model, thread count and torch version,
holding the best fp32 matmul FLOP/s measured so far.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_cache_file() -> Path:
    """One file per machine and user, shared by every run and outputs folder."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "article_gpt" / "peak_flops.json"


def cpu_key(threads: int, torch_version: str | None = None) -> str:
    """The cache entry of this CPU at ``threads`` threads (torch's version: the installed one)."""
    version = torch_version or importlib.metadata.version("torch")
    return f"{cpu_model()} | {threads} threads | torch {version}"


def read_table(path: Path) -> dict:
    """The cache's entries by key; empty when the file is missing or damaged (it is measured again)."""
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        table = {}
    return table if isinstance(table, dict) else {}


def cached_cpu_peak(threads: int, cache_file: str | os.PathLike | None = None) -> float | None:
    """The best fp32 matmul FLOP/s measured on this CPU at ``threads`` threads, None if never measured."""
    entry = read_table(Path(cache_file) if cache_file else default_cache_file()).get(cpu_key(threads))
    flops = entry.get("flops") if isinstance(entry, dict) else None
    return float(flops) if isinstance(flops, (int, float)) else None
