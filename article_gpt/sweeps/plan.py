"""``python train.py -m <sweep> plan=true``: the sweep's jobs and what each will cost, before any runs.

Hydra expands the sweep as it would launch it (the basic sweeper's ``split_arguments``, or the
Optuna sweeper's own checks and search space) and composes each job's config (its config
loader's ``load_sweep_config``, as a launcher does); every job is validated by config/rules.py,
so a sweep the launch would refuse is refused here, in one line. Each job's row holds the counts
its run would record (sweeps/plan_counts.py).

The wall time is estimated as training FLOPs / (this machine's cached fp32 peak x the MFU its
past runs recorded), plus what those runs spent outside training, over the launcher's parallel
slots (sweeps/plan_speed.py). Nothing is trained, no run or sweep directory is made, and torch
is never imported (a corpus whose token cache is missing is tokenized in memory).
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from article_gpt.errors import ConfigError, exit_on_user_error
from article_gpt.sweeps import plan_speed
from article_gpt.sweeps.plan_counts import JobCounter, Row

KEY = "plan"  # plan=true on the command line (read here, before Hydra starts; no config key)
MAX_POINTS = 512  # search points composed for a search's per-trial maximum


@dataclass
class Plan:
    rows: list[Row]
    sweeper: str  # basic or optuna
    swept: list[str]
    at_once: int  # jobs running side by side
    launcher: str  # the launcher and why that many at once
    corpus: str  # the training corpus, in words
    n_trials: int | None = None  # a search: trials in total
    batch: int = 1  # a search: trials launched together
    points: int | None = None  # a search: grid points composed for the maximum
    notes: list[str] = field(default_factory=list)
    wall_s: float | None = None  # the estimated wall time (sweeps/plan_speed.py)
    how: list[str] = field(default_factory=list)  # how it was reckoned, in words


def split_flag(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``plan=...``, and whether it asked for a plan (``plan=true``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from article_gpt.config.rules import BOOL, check_rules

    rest, wanted = [argv[0]], False
    for arg in argv[1:]:
        if arg.split("=", 1)[0] != KEY:
            rest.append(arg)
            continue
        value = OverridesParser.create().parse_override(arg).value() if "=" in arg else None
        check_rules(OmegaConf.create({KEY: value}), {KEY: BOOL})
        wanted = bool(value)
    return rest, wanted


def show(argv: list[str]) -> int:
    """Print the plan of the sweep ``argv`` names; a bad sweep is one ``error:`` line, exit 2."""
    with exit_on_user_error():
        print(plan_speed.render(build(argv[1:])))
    return 0


def build(args: list[str]) -> Plan:
    """The plan of ``python train.py -m <args>`` (a single run: a plan of one job)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    flags = [a for a in args if a.startswith("-") and a not in ("-m", "--multirun")]
    if flags:
        raise ConfigError(f"{flags[0]}: plan=true takes overrides (and -m) only")
    overrides = [a for a in args if not a.startswith("-")]
    # the launchers' defaults under their plugins' names: Hydra's deprecation notice is noise (as in training/run.py)
    warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
    root = Path(os.environ.get("ARTICLE_GPT_ROOT", Path(__file__).resolve().parents[2]))
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3", job_name="train"):
        hydra = GlobalHydra.instance()
        cfg = _compose(lambda: hydra.hydra.compose_config("train", overrides, run_mode=_multirun(),
                                                          with_log_configuration=False))
        loader = hydra.config_loader()
        _validate(cfg)  # the sweep's shared config, as ValidateConfig checks it before the first job
        if str(cfg.hydra.sweeper._target_).endswith("OptunaSweeper"):
            plan = _search(cfg, loader)
        else:
            plan = _grid(cfg, loader)
    plan_speed.estimate(plan, cfg)
    return plan


def _multirun():
    from hydra.types import RunMode

    return RunMode.MULTIRUN


def _compose(make):
    """Hydra's composition, its errors as one line (errors.hydra_error_line, as run_main reports them)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from article_gpt.errors import hydra_error_line

    try:
        return make()
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_error_line(err)) from None


def _validate(cfg: DictConfig, job: list[str] | None = None) -> DictConfig:
    from article_gpt.config.rules import validate
    from article_gpt.config.shape import with_pretrained_shape

    task = with_pretrained_shape(cfg)
    try:
        validate(task, hydra=task.hydra)
    except ConfigError as err:
        raise ConfigError(f"{err} (job: {' '.join(job)})" if job else str(err)) from None
    return task


# ---- the jobs -----------------------------------------------------------------------------------
def _grid(cfg: DictConfig, loader) -> Plan:
    """The basic sweeper's jobs: its ``params`` and the command line, crossed by ``split_arguments``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)
    parsed = _compose(lambda: OverridesParser.create(config_loader=loader).parse_overrides(lines))
    swept = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    jobs = [job for batch in _compose(lambda: BasicSweeper.split_arguments(parsed, None)) for job in batch]
    counter = JobCounter(cfg)
    rows = [counter.row(_validate(_compose(lambda j=job: loader.load_sweep_config(cfg, j)), job), job, swept)
            for job in jobs]
    return Plan(rows, "basic", swept, *plan_speed.parallel(cfg, len(rows)), counter.corpus_line())


def _search(cfg: DictConfig, loader) -> Plan:
    """An Optuna search: the sweeper's own checks and search space, then its most expensive trial
    over the grid of its choices (an interval at both ends; cost never peaks inside one)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from article_gpt.sweeps.optuna_sweeper import OptunaSweeperImpl

    options = {k: v for k, v in OmegaConf.to_container(cfg.hydra.sweeper, resolve=False).items() if k != "_target_"}
    sweeper = OptunaSweeperImpl(**options)
    sweeper.config = cfg
    _, space = sweeper.validated(list(cfg.hydra.overrides.task), loader)
    axes = {name: d.grid if d.grid is not None else sorted({d.distribution.low, d.distribution.high})
            for name, d in space.dims.items()}
    points = list(itertools.islice(itertools.product(*axes.values()), MAX_POINTS))
    parser = OverridesParser.create(config_loader=loader)
    is_group = _group_test(loader)
    composed: dict[tuple, DictConfig] = {}
    counter, rows = JobCounter(cfg), []
    for point in points:
        job = space.overrides(dict(zip(axes, point)))
        key = tuple(o for o in job if is_group(o.split("=", 1)[0]))
        if key not in composed:  # one composition per choice of config groups; values are set on it
            composed[key] = _compose(lambda j=job: loader.load_sweep_config(cfg, j))
        job_cfg = OmegaConf.create(composed[key])
        values = [o for o in parser.parse_overrides(job) if not is_group(o.key_or_group)]
        _compose(lambda v=values, c=job_cfg: type(loader)._apply_overrides_to_config(v, c))
        OmegaConf.update(job_cfg, "hydra.overrides.task", job, force_add=True)
        rows.append(counter.row(_validate(job_cfg, job), job, list(axes)))
    at_once, launcher = plan_speed.parallel(cfg, sweeper.n_jobs)
    total = math.prod(len(v) for v in axes.values())
    plan = Plan(rows, "optuna", list(axes), at_once, launcher, counter.corpus_line(), sweeper.trial_count(space),
                sweeper.n_jobs, len(points))
    if total > len(points):
        plan.notes.append(f"the maximum is over the first {len(points)} of {total} grid points")
    return plan


def _group_test(loader):
    """``key -> bool``: whether an override key names a config group (model=..., hydra/launcher=...)."""
    known: dict[str, bool] = {}

    def is_group(key: str) -> bool:
        key = key.lstrip("+~").split("@", 1)[0]
        if key not in known:
            known[key] = bool(loader.get_group_options(key))
        return known[key]

    return is_group
