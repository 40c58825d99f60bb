"""The token cache file: a corpus's uint16 ids, then a trailer that proves the file whole.

A cache file is read on every run that uses its corpus, so a damaged one must never pass for
good: before, a truncated file was memory-mapped as it was and the run trained on part of the
corpus (or on garbage) without a word. The trailer holds a magic tag, the number of ids and a
BLAKE2b digest of them; a file whose size, tag or digest disagrees is reported in one log line
and tokenized again. The ids stay at offset 0, so a good file is still read as a memmap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"AGPTTOK1"
TRAILER = struct.Struct("<8sQ16s")  # magic, number of ids, blake2b-128 of the ids' bytes
SUFFIX = ".tok"
log = logging.getLogger(__name__)


def _digest(ids: np.ndarray) -> bytes:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(ids)).cast("B"), digest_size=16).digest()


def read(path: Path) -> np.ndarray | None:
    """The cached ids, or None when there is no cache or it is truncated or damaged."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - TRAILER.size))
            tail = f.read(TRAILER.size)
    except FileNotFoundError:
        return None
    except OSError as err:
        log.warning("token cache %s cannot be read (%s): tokenizing again", path, err.strerror)
        return None
    if len(tail) == TRAILER.size:
        magic, count, digest = TRAILER.unpack(tail)
        if magic == MAGIC and count * 2 + TRAILER.size == size:
            ids = np.memmap(path, dtype=np.uint16, mode="r", shape=(count,)) if count else np.zeros(0, np.uint16)
            if _digest(ids) == digest:
                return ids
    log.warning("token cache %s is truncated or damaged: tokenizing again", path)
    return None


def write(path: Path, ids: np.ndarray) -> None:
    """Write ``ids`` and the trailer under a temporary name, then rename: readers (other jobs
    tokenizing the same corpus) see the whole file or none."""
    ids = np.ascontiguousarray(ids, dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(memoryview(ids).cast("B"))
            f.write(TRAILER.pack(MAGIC, len(ids), _digest(ids)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
