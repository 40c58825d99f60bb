"""An Optuna search space from Hydra's sweep syntax.

``hydra.sweeper.params`` (and any sweep on the command line) reads as Hydra overrides:

    model.heads: choice(2,4,8)                    -> categorical
    model.block_size: range(16,129,16)            -> integers 16, 32, ..., 128
    optim.lr: tag(log, interval(1e-4, 3e-3))      -> float, log-uniform
    model.num_layers: tag(int, interval(1, 6))    -> integer in [1, 6]
    model: tiny,small                             -> a config group choice

A command-line override wins over the config: a sweep (``model.heads=2,4``) replaces that
dimension, a plain value (``model.heads=4``) fixes the key for every trial. Keys are checked
against the composed config before the first trial, so a typo is one line, not a failed study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from article_gpt.errors import ConfigError

SYNTAX = "choice(a,b,...), a,b,..., range(start,stop[,step]), interval(lo,hi), tag(log|int, interval(lo,hi))"
_MISSING = object()


@dataclass
class Dimension:
    """One searched key: its Optuna distribution and how a sampled value is written back."""

    key: str  # as it appears in the override, with any +/++ prefix and @package
    distribution: Any  # optuna.distributions.BaseDistribution
    grid: list | None  # every value, for the grid sampler; None for continuous intervals
    strings: dict = field(default_factory=dict)  # categorical value -> its override text

    @property
    def name(self) -> str:
        """The Optuna parameter name: the key without its +/++ prefix."""
        return self.key.lstrip("+")

    def override(self, value: Any) -> str:
        if value in self.strings:
            return f"{self.key}={self.strings[value]}"
        if isinstance(value, float):
            return f"{self.key}={value!r}"
        return f"{self.key}={value}"


@dataclass
class SearchSpace:
    dims: dict[str, Dimension]  # by parameter name
    fixed: list[str]  # overrides every trial gets

    @property
    def distributions(self) -> dict[str, Any]:
        return {name: d.distribution for name, d in self.dims.items()}

    def overrides(self, params: dict[str, Any]) -> list[str]:
        out = list(self.fixed)
        for name, value in params.items():
            dim = self.dims.get(name)
            out.append(dim.override(value) if dim else f"{name}={value}")
        return out

    def grid(self) -> dict[str, list]:
        return {name: d.grid for name, d in self.dims.items()}


def flatten(params: Any, prefix: str = "") -> dict[str, str]:
    """``{model: {heads: "choice(2,4)"}}`` and ``{"model.heads": "choice(2,4)"}`` alike -> flat keys."""
    flat: dict[str, str] = {}
    for key, value in (params or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = "null" if value is None else str(value)
    return flat


def _choice_value(x: Any) -> Any:
    """An element of choice(...) as an Optuna categorical value (None, bool, int, float or str)."""
    from hydra.core.override_parser.types import QuotedString, Transformer

    if isinstance(x, QuotedString):
        return x.text
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return Transformer.str(x)  # lists, dicts: their override text


def log_tagged(override) -> bool:
    """Whether a sweep override is scaled by log (Hydra's ``tag(log, ...)``)."""
    return "log" in (getattr(override.value(), "tags", None) or ())


def _dimension(override, where: str) -> Dimension:
    import optuna.distributions as D
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer

    key, value = override.get_key_element(), override.value()
    tags, log = set(getattr(value, "tags", ()) or ()), log_tagged(override)
    if isinstance(value, RangeSweep):
        values = list(value.range())
        if not values:
            raise ConfigError(f"{where}: empty range")
        if all(isinstance(v, int) for v in values):
            lo, hi, step = min(values), max(values), abs(int(value.step or 1))
            if log and step != 1:
                raise ConfigError(f"{where}: a log-scaled range needs step 1")
            return Dimension(key, D.IntDistribution(lo, hi, log=log, step=step), sorted(values))
        # float ranges are categorical: the exact values Hydra enumerates, no rounding drift
        return Dimension(key, D.CategoricalDistribution(values), values)
    if isinstance(value, IntervalSweep):
        lo, hi = value.start, value.end
        if lo is None or hi is None or not lo < hi:
            raise ConfigError(f"{where}: interval(lo, hi) needs lo < hi")
        if log and lo <= 0:
            raise ConfigError(f"{where}: a log-scaled interval needs lo > 0")
        if "int" in tags:
            return Dimension(key, D.IntDistribution(math.ceil(lo), math.floor(hi), log=log), None)
        return Dimension(key, D.FloatDistribution(float(lo), float(hi), log=log), None)
    raw = list(override.sweep_iterator())
    choices = [_choice_value(x) for x in raw]
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}: a choice lists the same value twice")
    strings = {c: Transformer.str(x) for c, x in zip(choices, raw)}
    return Dimension(key, D.CategoricalDistribution(choices), choices, strings)


def _check_key(override, where: str, config: DictConfig, config_loader) -> None:
    """A key the composed config lacks (and not added with +) would fail every trial: say so now."""
    if override.is_add() or override.is_force_add() or override.is_hydra_override():
        return
    key = override.key_or_group
    options = config_loader.get_group_options(key) if config_loader is not None else []
    if options:  # a config group (model=tiny,small): every choice must be one of its configs
        if override.is_sweep_override() and not override.is_interval_sweep():
            unknown = [str(v) for v in override.sweep_iterator() if str(v) not in options]
            if unknown:
                raise ConfigError(f"{where}: {key}={unknown[0]} is not a config of group {key} "
                                  f"(one of {', '.join(options)})")
        return
    task = {k: v for k, v in config.items() if k != "hydra"}
    value = OmegaConf.select(OmegaConf.create(task), key, default=_MISSING, throw_on_resolution_failure=False)
    if value is _MISSING:
        raise ConfigError(f"{where}: no such config key (search config keys such as model.heads or optim.lr, "
                          "or groups such as model; add a new key with +key=...)")


def parse(params: dict, arguments: list[str], config: DictConfig, config_loader) -> SearchSpace:
    """The search space of ``params`` (hydra.sweeper.params) and the command line's ``arguments``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create(config_loader=config_loader)
    entries = [(f"hydra.sweeper.params.{k}={v}", f"{k}={v}") for k, v in flatten(params).items()]
    entries += [(line, line) for line in arguments]
    dims: dict[str, Dimension] = {}
    fixed: dict[str, str] = {}
    for where, line in entries:
        try:
            (override,) = parser.parse_overrides([line])
        except HydraException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{where}: not a valid override ({first}); sweep syntax: {SYNTAX}") from None
        name = override.get_key_element().lstrip("+")
        dims.pop(name, None)  # a later line (the command line) replaces an earlier one
        fixed.pop(name, None)
        if override.is_sweep_override():
            _check_key(override, where, config, config_loader)
            dims[name] = _dimension(override, where)
        else:
            if where != line:  # a plain value in hydra.sweeper.params: check it too
                _check_key(override, where, config, config_loader)
            fixed[name] = line
    return SearchSpace(dims, list(fixed.values()))
