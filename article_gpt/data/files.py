"""The files a data source names: a file, a directory (every .txt/.md inside, sorted) or a glob.

The one rule for which files a ``data.*.path`` reads, used by the loader (corpus.py) and by the
config check before a run starts (config/paths.py). Cheap to import: no torch, no numpy.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from article_gpt.errors import DataError

TEXT_SUFFIXES = (".txt", ".md")
VALID_SOURCE = f"a file, a directory of {'/'.join(TEXT_SUFFIXES)} files or a glob"


class SourceError(DataError):
    """A source that names no file: ``str()`` is ``<source>: <problem>``; ``problem`` alone lets a
    caller name the config key instead (config/paths.py)."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source, self.problem = source, problem


def resolve_files(source: str) -> list[Path]:
    """The files a source names, in a stable order, or a SourceError (a DataError) naming the source."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise SourceError(source, f"directory holds no {'/'.join(TEXT_SUFFIXES)} files")
        return files
    if glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
        files = [p for p in files if p.is_file()]
        if not files:
            raise SourceError(source, "glob matches no files")
        return files
    raise SourceError(source, "no such file or directory")
