"""User-facing errors: each is reported as one line naming the key, value or file at fault."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


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
    from omegaconf.errors import InterpolationResolutionError

    _restore_full_error()  # the task runs: its own errors are reported as before (see run_main)
    try:
        yield
    except ArticleGPTError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(exit_code) from None
    except InterpolationResolutionError as err:  # a ${...} in an override that cannot resolve
        print(f"error: {interpolation_error_line(err)}", file=sys.stderr, flush=True)
        raise SystemExit(exit_code) from None


def interpolation_error_line(err: BaseException) -> str:
    key = getattr(err, "full_key", None)
    message = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{key}: {message}" if key else message


# ---- Hydra's own errors ------------------------------------------------------------------------
# Hydra prints a bad override or a missing config option over several lines, with its config
# search path. run_main asks Hydra to raise them instead (HYDRA_FULL_ERROR=1, only while Hydra
# composes: the task puts the variable back, so jobs and child processes see the user's own)
# and reports them in one line like every other bad input.
_FULL_ERROR = "HYDRA_FULL_ERROR"
_set_by_us = False


def _restore_full_error() -> None:
    global _set_by_us
    if _set_by_us:
        os.environ.pop(_FULL_ERROR, None)
        _set_by_us = False


def hydra_error_line(err: BaseException) -> str:
    """One line for an error Hydra or OmegaConf raised while composing the config."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(err).strip()
    first = text.splitlines()[0].strip() if text else type(err).__name__
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        known = f"; available: {', '.join(err.options)}" if err.options else ""
        return f"{group}={option}: no such option in conf/{group}/" + known if group else first
    if isinstance(err, OverrideParseException):
        return f"{err.override}: not a valid override ({err.message.splitlines()[0]}); e.g. key=value, +key=value"
    if first.startswith("Could not override '"):
        key = first.split("'")[1]
        added = f"a new key is added with +{key}=... where something reads it"
        near = nearest_key(key, composed_keys(err))
        if near:
            return f"{key}: no such key in the config; did you mean {near}? ({added})"
        return f"{key}: no such key in the config; {added}"
    if first.startswith("Could not append to config. An item is already at '"):
        key = first.split("'")[1]
        return f"+{key}: {key} is already in the config; set it without the +: {key}=..."
    lines = []
    for line in text.splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip():
            lines.append(line.strip())
    return "; ".join(lines)[:300] or type(err).__name__


def composed_keys(err: BaseException) -> list[str]:
    """Every dotted key of the config Hydra had composed when an override named an unknown key:
    the config without that override (its groups chosen, the overrides before it applied), which
    OmegaConf's error carries as the node the key was looked up in. No second composition, no
    interpolation resolved; [] where the error carries no config."""
    cause = err.__cause__ or err.__context__
    node = getattr(cause, "parent_node", None)
    root = getattr(node, "_get_root", None)
    if root is None:
        return []
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    keys: list[str] = []

    def walk(cfg: DictConfig, prefix: str) -> None:
        try:  # an interpolated node stays its ${...} string
            items = list(cfg.items_ex(resolve=False))
        except OmegaConfBaseException:  # a typed node that is None or ??? (hydra.sweeper.params): no keys
            return
        for key, value in items:
            keys.append(prefix + str(key))
            if isinstance(value, DictConfig):
                walk(value, f"{prefix}{key}.")

    try:
        walk(root(), "")
    except Exception:  # a suggestion is a courtesy: never the reason the one line is not printed
        return []
    return keys


def nearest_key(key: str, keys: list[str]) -> str | None:
    """The valid key ``key`` most likely means, or None where none is close: the one key of that
    exact name at another level (heads -> model.heads), else a sibling with a close name
    (model.hedas -> model.heads), else a close dotted key (modle.heads -> model.heads)."""
    import difflib

    parent, _, leaf = key.rpartition(".")
    elsewhere = [k for k in keys if k.rpartition(".")[2] == leaf]
    if len(elsewhere) == 1:
        return elsewhere[0]
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    if match := difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.75):
        return siblings[match[0]]
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.8)
    return match[0] if match else None


def run_main(main: Callable[[], Any]) -> Any:
    """Call a ``@hydra.main`` function, reporting Hydra's composition errors in one line."""
    global _set_by_us
    if os.environ.get(_FULL_ERROR) == "1":
        return main()  # the user asked for Hydra's full report
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ[_FULL_ERROR], _set_by_us = "1", True
    try:
        return main()
    except (HydraException, OmegaConfBaseException) as err:
        if not _set_by_us:  # raised by the task itself, after the variable was put back
            raise
        print(f"error: {hydra_error_line(err)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        _restore_full_error()
