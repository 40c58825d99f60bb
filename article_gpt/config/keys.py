"""Keys added with ``+key=value`` must be read by some part of the run.

Hydra adds any ``+key`` it is given. A key nothing reads used to be ignored in silence (a
``+resume=...`` guess trained from scratch), and one a constructor does not take crashed it with
a raw ``TypeError`` after start-up. Here an added key is accepted only when the object its
section builds takes it as an argument: the dataclass behind ``model``/``optim``/... or the
``_target_`` of ``trainer``, ``data`` and each callback. Everything else in the tree is read
key by key, so a key added there is read by nothing. The class is imported only when a ``+``
key names its section (the run needs that import anyway).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from article_gpt.errors import ConfigError

# sections built from a class that is not named in the config itself
SECTION_CLASSES = {
    "model": "article_gpt.model.gpt.GPTConfig",
    # optim names its class: optim._target_ (conf/optim/<name>.yaml), read like trainer's
    "sample": "article_gpt.training.module.SampleConfig",
    "dataloader": "article_gpt.data.corpus.LoaderConfig",
    "data.train": "article_gpt.data.corpus.SplitConfig",
    "data.val": "article_gpt.data.corpus.SplitConfig",
}
LOGGER_KINDS = ("wandb", "csv", "tensorboard")  # article_gpt.tracking.loggers builds these


def added_keys(overrides: list[str], groups: set[str]) -> list[tuple[str, Any]]:
    """``(key, value)`` of each ``+key=value`` override that adds a key (not a config group)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    added = []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        if o.is_add() and o.package is None and key not in groups and not key.startswith("hydra."):
            added.append((key, o.value()))
    return added


def _parameters(target: str) -> set[str] | None:
    """The argument names of a class (dataclass fields or ``__init__``); None if it takes ``**kwargs``."""
    from hydra.utils import get_class

    cls = get_class(target)
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _builder(cfg: DictConfig, section: str) -> str | None:
    if section in SECTION_CLASSES:
        return SECTION_CLASSES[section]
    target = OmegaConf.select(cfg, f"{section}._target_", throw_on_missing=False)
    return str(target) if target else None


def _takes(section: str, builder: str, name: str, params: set[str], shown: int = 12) -> str:
    """What the section does take: the near misses of ``name`` first, then the rest."""
    close = difflib.get_close_matches(name, params, n=3)
    rest = sorted(params - set(close))
    names = close + rest[: max(0, shown - len(close))]
    more = f" and {len(params) - len(names)} more" if len(params) > len(names) else ""
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{section} ({builder.rsplit('.', 1)[-1]}) takes {', '.join(names)}{more}{hint}"


def check_added_key(cfg: DictConfig, key: str, value: Any) -> None:
    """``ConfigError`` unless the nearest section of ``key`` that builds an object takes it."""
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        section, name = ".".join(parts[:depth]), parts[depth]
        builder = _builder(cfg, section)
        if builder is not None:
            params = _parameters(builder)
            if params is None or (name in params and depth == len(parts) - 1):
                return
            raise ConfigError(f"+{key}={value}: not read by anything; {_takes(section, builder, name, params)}")
        if depth == len(parts) - 1 and section == "callbacks" and isinstance(value, dict) and "_target_" in value:
            return  # a callback of one's own: +callbacks.name={_target_: ...}
        if depth == len(parts) - 1 and section == "logger" and name in LOGGER_KINDS:
            return
    raise ConfigError(f"+{key}={value}: not read by anything; set an existing key (without +), "
                      "see `python train.py --cfg job` for the keys")


def check_added_keys(cfg: DictConfig, overrides: list[str], groups: set[str]) -> None:
    for key, value in added_keys(overrides, groups):
        check_added_key(cfg, key, value)
