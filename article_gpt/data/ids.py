"""A corpus's text as token ids, and where its windows start: no torch, so the sweep plan
(sweeps/plan.py) counts a corpus as the training data module (corpus.py) reads it.

A source is a file, a directory or a glob (files.py); each file is a document; documents are
joined with <|endoftext|>. The ids are cached as a uint16 file keyed by the sha256 of the encoding
name and every document's bytes (token_cache.py), so a changed file never hits a stale cache.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from article_gpt.data import token_cache
from article_gpt.data.files import resolve_files
from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import DataError

log = logging.getLogger("article_gpt.data.corpus")  # the corpus's log lines keep the name users filter on


def read_documents(source: str) -> list[tuple[Path, str]]:
    docs = []
    for f in resolve_files(source):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{f}: not UTF-8 text (byte {err.start})") from None
        except OSError as err:
            raise DataError(f"{f}: cannot read ({err.strerror})") from None
        if not text.strip():
            raise DataError(f"{f}: file is empty")
        docs.append((f, text))
    return docs


def tokenize_documents(docs: list[tuple[Path, str]], encoding: str, cache_dir: str | None) -> np.ndarray:
    """uint16 ids of the documents joined with EOT, read from the cache when it holds them."""
    enc = get_encoding(encoding)
    if enc.n_vocab > 2**16:
        raise DataError(f"tokenizer {encoding!r} has {enc.n_vocab} ids, more than the uint16 cache holds")
    key = hashlib.sha256(encoding.encode())
    for _, text in docs:
        key.update(b"\0doc\0" + text.encode("utf-8"))
    cache = Path(cache_dir) / f"{key.hexdigest()[:32]}{token_cache.SUFFIX}" if cache_dir else None
    cached = token_cache.read(cache) if cache is not None else None  # None: missing, truncated or damaged
    if cached is not None:
        log.info("token cache hit: %s", cache)
        return cached
    log.info("token cache miss: tokenizing %d document(s)%s", len(docs), f" into {cache}" if cache else "")
    ids: list[int] = []
    for i, (_, text) in enumerate(docs):
        if i:
            ids.append(enc.eot_token)
        ids.extend(enc.encode_ordinary(text))  # a literal "<|endoftext|>" in text stays text
    arr = np.asarray(ids, dtype=np.uint16)
    if cache is not None:
        token_cache.write(cache, arr)  # atomic: concurrent jobs never read a half-written cache
    return arr


def split_tokens(ids: np.ndarray, val_fraction: float, eot: int, min_len: int,
                 whole_documents: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/val split near ``1 - val_fraction``, at a document boundary when
    one lies close enough (within half the val size) and leaves both sides usable; with
    ``whole_documents``, at the nearest usable boundary however far (split by article)."""
    n = len(ids)
    cut = int(round(n * (1 - val_fraction)))
    boundaries = np.flatnonzero(np.asarray(ids) == eot)
    ok = boundaries[(boundaries >= min_len) & (n - boundaries - 1 >= min_len)]
    if len(ok):
        best = ok[np.argmin(np.abs(ok - cut))]
        if whole_documents or abs(best - cut) <= (n - cut) / 2:
            return ids[:best], ids[best + 1 :]  # drop the EOT between them
    return ids[:cut], ids[cut:]


def window_starts(n_ids: int, block_size: int, stride: int) -> range:
    """Starts of the windows of ``block_size + 1`` tokens, every ``stride`` tokens, that fit in ``n_ids``."""
    return range(0, n_ids - block_size, stride)


def document_starts(ids: np.ndarray, eot: int, block_size: int, stride: int) -> np.ndarray:
    """Window starts tiling each document (the text between <|endoftext|> tokens) from its first
    token, every ``stride`` tokens while the window still starts inside it; a document's last
    window may run on into the next one. Only windows of ``block_size + 1`` tokens that fit."""
    firsts = np.concatenate([[0], np.flatnonzero(np.asarray(ids) == eot) + 1])
    ends = np.append(firsts[1:] - 1, len(ids))  # each document's EOT, or the corpus end
    starts = np.concatenate([np.arange(a, b, stride) for a, b in zip(firsts, ends)])
    return starts[starts + block_size < len(ids)]
