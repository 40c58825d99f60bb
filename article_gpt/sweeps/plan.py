"""``python train.py -m <sweep> plan=true``: the sweep's jobs and what each will cost, before any runs.

Hydra expands the sweep as it would launch it (the basic sweeper's ``split_arguments``, or the
Optuna search space of sweeps/search_space.py) and composes each job's config (its config
loader's ``load_sweep_config``, as a launcher does); every job is validated by config/rules.py,
so a sweep the launch would refuse is refused here, in one line. Each job's row holds the counts
its run would record: parameters and FLOPs per token (model/accounting.py, the model's own
arithmetic), and the optimizer steps, tokens and training FLOPs of its budget or its epoch and
step limits over the corpus (data/ids.py; budget arithmetic in model/accounting.py).

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
from article_gpt.model import accounting
from article_gpt.runs.naming import parse_overrides
from article_gpt.sweeps import plan_speed
from article_gpt.sweeps.records import display_value

KEY = "plan"  # plan=true on the command line (read here, before Hydra starts; no config key)
MAX_POINTS = 512  # search points composed for a search's per-trial maximum


@dataclass
class Row:
    """One job of the plan: what its run will record."""

    overrides: list[str]
    swept: dict[str, str]  # the swept keys' values of this job
    params_total: int
    params_non_embedding: int
    flops_per_token: int
    steps: int | None  # None: only trainer.max_time ends it
    tokens: int | None
    limit: str  # what ends the run: budget.tokens, budget.flops, trainer.max_steps or trainer.max_epochs
    threads: int
    world: int  # training processes (DDP ranks)
    seconds: float | None = None

    @property
    def train_flops(self) -> int | None:
        return None if self.tokens is None else self.tokens * self.flops_per_token


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
    context = _Context(cfg)
    rows = [context.row(_validate(_compose(lambda j=job: loader.load_sweep_config(cfg, j)), job), job, swept)
            for job in jobs]
    return Plan(rows, "basic", swept, *context.parallel(len(rows)), context.corpus_line())


def _search(cfg: DictConfig, loader) -> Plan:
    """An Optuna search: the sweeper's own checks and search space, then its most expensive trial
    over the grid of its choices (an interval at both ends; cost never peaks inside one)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from article_gpt.sweeps import search_space
    from article_gpt.sweeps.optuna_sweeper import OptunaSweeperImpl

    options = {k: v for k, v in OmegaConf.to_container(cfg.hydra.sweeper, resolve=False).items() if k != "_target_"}
    sweeper = OptunaSweeperImpl(**options)
    sweeper.config = cfg
    sweeper._check()
    space = search_space.parse(sweeper.params, list(cfg.hydra.overrides.task), cfg, loader)
    if not space.dims:
        raise ConfigError("hydra.sweeper.params: empty search space; give keys such as "
                          "model.heads: choice(2,4,8) (or a sweep on the command line)")
    sweeper._sampler(space)  # the grid sampler's own refusal of an interval
    axes = {name: d.grid if d.grid is not None else sorted({d.distribution.low, d.distribution.high})
            for name, d in space.dims.items()}
    points = list(itertools.islice(itertools.product(*axes.values()), MAX_POINTS))
    parser = OverridesParser.create(config_loader=loader)
    is_group = _group_test(loader)
    composed: dict[tuple, DictConfig] = {}
    context, rows = _Context(cfg), []
    for point in points:
        job = space.overrides(dict(zip(axes, point)))
        key = tuple(o for o in job if is_group(o.split("=", 1)[0]))
        if key not in composed:  # one composition per choice of config groups; values are set on it
            composed[key] = _compose(lambda j=job: loader.load_sweep_config(cfg, j))
        job_cfg = OmegaConf.create(composed[key])
        values = [o for o in parser.parse_overrides(job) if not is_group(o.key_or_group)]
        _compose(lambda v=values, c=job_cfg: type(loader)._apply_overrides_to_config(v, c))
        OmegaConf.update(job_cfg, "hydra.overrides.task", job, force_add=True)
        rows.append(context.row(_validate(job_cfg, job), job, list(axes)))
    n_trials = sweeper.n_trials
    if sweeper.sampler.get("name") == "grid":
        n_trials = min(n_trials, math.prod(len(v) for v in space.grid().values()))
    at_once, launcher = context.parallel(sweeper.n_jobs)
    total = math.prod(len(v) for v in axes.values())
    plan = Plan(rows, "optuna", list(axes), at_once, launcher, context.corpus_line(), n_trials,
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


class _Context:
    """What rows share: the corpus counted once per split, the cores and the launcher."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.corpora, self.train_tokens = cfg, {}, None

    def parallel(self, jobs: int) -> tuple[int, str]:
        return plan_speed.parallel(self.cfg, jobs)

    def corpus_line(self) -> str:
        data = self.cfg.data
        return f"{data.train.path}: {self.train_tokens or 0:,} training tokens"

    def row(self, job_cfg: DictConfig, job: list[str], swept: list[str]) -> Row:
        from article_gpt.parallel.cores import local_processes

        resolved = {k: OmegaConf.to_container(job_cfg[k], resolve=True) if OmegaConf.is_config(job_cfg[k])
                    else job_cfg[k] for k in ("model", "data", "dataloader", "trainer", "budget", "threads")}
        model, data, trainer = resolved["model"], resolved["data"], resolved.get("trainer") or {}
        counts = accounting.param_counts(**model)
        fpt = accounting.flops_per_token(counts["params_matmul"], model["num_layers"],
                                         model["heads"] * model["head_size"], model["block_size"])
        world = local_processes(job_cfg)
        windows = self._windows(data)
        loader = resolved["dataloader"]
        limit = trainer.get("limit_train_batches")
        per_step = accounting.epoch_step_tokens(windows, loader["batch_size"], data["block_size"], world,
                                                bool(loader.get("drop_last")), 1.0 if limit is None else limit,
                                                trainer.get("accumulate_grad_batches") or 1)
        end, limit_key = _run_end(resolved.get("budget") or {}, trainer, per_step, fpt)
        values = parse_overrides(job)
        return Row(job, {k: display_value(values.get(k, "")) for k in swept}, counts["params_total"],
                   counts["params_non_embedding"], fpt, end[0] if end else None, end[1] if end else None,
                   limit_key, plan_speed.threads_per_process(self.cfg, resolved, world), world)

    def _windows(self, data: dict) -> int:
        """Training windows per epoch, as the data module (data/corpus.py) cuts them."""
        from article_gpt.data import ids as corpus
        from article_gpt.data.tokenizer import get_encoding

        block, val_path = data["block_size"], (data.get("val") or {}).get("path")
        key = (data["train"]["path"], data["tokenizer"], val_path, data.get("val_fraction"),
               data.get("whole_documents"), None if val_path else block)
        if key not in self.corpora:
            cache = data.get("cache_dir")
            cache = cache if cache and Path(cache).is_dir() else None  # makes no folder: no cache yet, in memory
            ids = corpus.tokenize_documents(corpus.read_documents(data["train"]["path"]), data["tokenizer"], cache)
            if not val_path:
                eot = get_encoding(data["tokenizer"]).eot_token
                whole = bool(data.get("whole_documents"))
                ids = corpus.split_tokens(ids, data["val_fraction"], eot, block + 1, whole)[0]
            self.corpora[key] = ids
            self.train_tokens = len(ids)
        ids, stride = self.corpora[key], data.get("stride") or block
        cap = (data.get("train") or {}).get("max_samples")
        if data.get("windows", "random") == "documents":  # the data module's own tiling
            eot = get_encoding(data["tokenizer"]).eot_token
            return len(corpus.document_starts(ids, eot, block, stride)[:cap])
        return len(corpus.window_starts(len(ids), block, stride)[:cap])


def _run_end(budget: dict, trainer: dict, per_step: list[int], fpt: int) -> tuple[tuple[int, int] | None, str]:
    """(steps, tokens) of the run and the setting that ends it, as training/budget.py and Lightning end it."""
    tokens = accounting.budget_tokens(budget.get("tokens"), budget.get("flops"), fpt)
    if tokens is not None:
        by_flops = budget.get("flops") is not None and tokens < (budget.get("tokens") or math.inf)
        return accounting.steps_for_budget(tokens, per_step), "budget.flops" if by_flops else "budget.tokens"
    max_steps = trainer.get("max_steps")
    end = accounting.steps_for_limits(per_step, trainer.get("max_epochs"), max_steps)
    if end is None:
        return None, "trainer.max_time"
    return end, "trainer.max_steps" if max_steps not in (None, -1) and end[0] == max_steps else "trainer.max_epochs"
