"""User-facing errors: each is reported as one line naming the key, value or file at fault."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class ArticleGPTError(Exception):
    """Bad input the user can fix. Entry points print ``str(err)`` alone, no traceback."""


class ConfigError(ArticleGPTError):
    """A config key holds a value that cannot work."""


class DataError(ArticleGPTError):
    """A corpus file is missing, unreadable, empty or too short."""


class CheckpointError(ArticleGPTError):
    """A checkpoint is missing, corrupted or of another architecture."""


def describe(err: BaseException, limit: int = 200) -> str:
    """One line for any exception: ours as their message, others as ``Type: first line``."""
    lines = str(err).strip().splitlines()
    first = lines[0][:limit] if lines else ""
    return first if isinstance(err, ArticleGPTError) and first else f"{type(err).__name__}: {first}"


class RunFailedError(ArticleGPTError):
    """Training itself failed (NaN loss, out of memory, a bug); the traceback is in error.log."""


@contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Turn an ``ArticleGPTError`` into ``error: <message>`` on stderr and a non-zero exit."""
    try:
        yield
    except ArticleGPTError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(exit_code) from None
