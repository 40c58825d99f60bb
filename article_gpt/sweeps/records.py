"""Runs compared side by side, read from what they left on disk (their record, ``.hydra/``).

Everything is read from the run directories (article_gpt.runs), never from the
process that trained them, so the same report comes out for a sweep just ended (any launcher,
jobs in other processes or on other machines) and for runs from different days put side by side.

A "swept key" is an override key whose value differs between the runs compared; a run that
does not override the key shows the value its composed config used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from article_gpt.errors import ArticleGPTError
from article_gpt.runs import dirs, record
from article_gpt.runs.dirs import is_run_dir
from article_gpt.runs.naming import parse_overrides, short_keys
from article_gpt.runs.record import MISSING, Status

# Columns after the swept keys in summary.csv (run record fields, in this order).
CSV_METRICS = ["status", "val_loss", "val_ppl", "train_loss", "params_total", "params_non_embedding",
               "flops_per_token", "tokens_per_sec", "elapsed_s", "first_step_s", "steps", "epochs",
               "tokens_seen", "train_flops",  # what each run trained on: compare at equal compute
               "mfu", "peak_flops", "peak_host_memory_mb", "peak_device_memory_mb"]  # how well it used the device

assert set(CSV_METRICS) <= set(record.FIELDS), set(CSV_METRICS) - set(record.FIELDS)


class NoRunsError(ArticleGPTError):
    """A path given to compare holds no run directory."""


@dataclass
class Run:
    run_dir: Path
    metrics: dict[str, Any]  # its record's fields; empty when the job died before writing one
    overrides: dict[str, str]  # key -> value as typed on the command line
    label: str = ""  # the job's name in the tables: its folder, or parent/folder when ambiguous
    swept: dict[str, str] = field(default_factory=dict)  # short swept key -> value
    swept_keys: dict[str, str] = field(default_factory=dict)  # short swept key -> its full dotted key

    @property
    def status(self) -> str:
        """A :class:`Status` value, or ``missing`` for a job that left no record."""
        return str(self.metrics.get("status", MISSING))

    @property
    def ok(self) -> bool:
        """Completed or pruned (a pruned trial stopped early on purpose): not a failure."""
        return self.status != MISSING and Status(self.status).finished

    @property
    def val_loss(self) -> float | None:
        v = self.metrics.get("val_loss")
        return v if isinstance(v, (int, float)) and math.isfinite(v) else None

    @property
    def error(self) -> str | None:
        if not self.metrics:
            return "no metrics.json: the job was killed before it finished (out of memory, time limit?)"
        return self.metrics.get("error")

    @property
    def short_name(self) -> str:
        """``heads=4,lr=0.001``: the swept values as typed (summary.csv's name column)."""
        return ",".join(f"{k}={v}" for k, v in self.swept.items()) or self.label

    @property
    def display_name(self) -> str:
        """The short name with numbers rounded for reading (tables, picture labels)."""
        return swept_label(self.swept) or self.label


SIGNIFICANT = 3  # digits a swept float is shown with: lr 0.0015151446654565377 -> 0.00152


def display_value(value: str) -> str:
    """A swept value for reading: a float to 3 significant digits, anything else as typed."""
    try:
        int(value)
        return value
    except ValueError:
        pass
    try:
        x = float(value)
    except ValueError:
        return value
    return format(x, f".{SIGNIFICANT}g") if math.isfinite(x) else value


def si(x: float | None, digits: int = 3) -> str:
    """12345 -> 12.3K; 1e11 -> 100G: counts and FLOPs as a reader says them ("-" for none)."""
    if x is None or not math.isfinite(x):
        return "-"
    for div, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1, "")):
        if abs(x) >= div:
            return f"{float(f'{x / div:.{digits}g}'):g}{unit}"  # 100K, never 1e+02K
    return f"{x:.{digits}g}"


def swept_label(swept: dict[str, str]) -> str:
    """``{"heads": "4", "lr": "0.0015151"}`` -> ``heads=4,lr=0.00152``."""
    return ",".join(f"{k}={display_value(v)}" for k, v in swept.items())


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Each path is a run directory, or a folder of them (a sweep, outputs/runs)."""
    found: list[Path] = []
    for path in paths:
        if is_run_dir(path):
            found.append(path)
            continue
        if not path.is_dir():
            raise NoRunsError(f"{path}: no such directory")
        children = [p for p in path.iterdir() if p.is_dir() and is_run_dir(p)]
        if not children:
            raise NoRunsError(f"{path}: neither a run directory (metrics.json) nor a folder of runs")
        # job folders are numbers: 2 before 10
        found += sorted(children, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    unique: dict[Path, Path] = {}  # a run named twice (a sweep and one of its jobs) counts once
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def load_run(run_dir: Path) -> Run:
    """The run in ``run_dir``; a damaged record is a RecordError (one line naming the file)."""
    rec = record.read(run_dir)
    metrics = rec.to_dict() if rec is not None else {}
    overrides = metrics.get("overrides")
    if overrides is None:
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return Run(run_dir, metrics, parse_overrides([str(o) for o in overrides]))


def configured_value(run_dir: Path, key: str) -> str:
    """The value a run used for a key it did not override: a config group's choice or a config value."""
    hydra_file, config_file = run_dir / ".hydra" / "hydra.yaml", run_dir / dirs.CONFIG
    if hydra_file.is_file():
        choice = OmegaConf.select(OmegaConf.load(hydra_file), f"hydra.runtime.choices.{key}")
        if choice is not None:
            return str(choice)
    if config_file.is_file():
        value = OmegaConf.select(OmegaConf.load(config_file), key, default=None, throw_on_resolution_failure=False)
        if value is not None and not OmegaConf.is_config(value):
            return str(value)
    return "-"


def label_runs(runs: list[Run]) -> None:
    """Fill each run's label and swept values (the keys whose values differ across runs)."""
    names = [r.run_dir.name for r in runs]
    for r in runs:
        r.label = r.run_dir.name if names.count(r.run_dir.name) == 1 else f"{r.run_dir.parent.name}/{r.run_dir.name}"
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    values = {k: [r.overrides.get(k) or configured_value(r.run_dir, k) for r in runs] for k in keys}
    swept = [k for k in keys if len(set(values[k])) > 1]
    short = short_keys(swept)
    for i, r in enumerate(runs):
        r.swept = {short[k]: values[k][i] for k in swept}
        r.swept_keys = {short[k]: k for k in swept}


LOG_SPAN = 10  # positive values spread over this factor or more are read on a log scale
CATEGORICAL, LINEAR, LOG = "categorical", "linear", "log"


def as_numbers(values: list[str]) -> list[float] | None:
    """The values as floats, or None when any of them is no number (a config group's choice)."""
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def log_declared(runs: list[Run]) -> set[str]:
    """The full keys a sweep's own search space scales by log: ``tag(log, interval(...))`` in its
    multirun.yaml (``hydra.sweeper.params`` or the command line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from article_gpt.sweeps.search_space import flatten, log_tagged

    lines: list[str] = []
    for sweep_dir in dict.fromkeys(r.run_dir.parent for r in runs):
        file = sweep_dir / dirs.MULTIRUN
        if not file.is_file():
            continue
        cfg = OmegaConf.load(file)
        params = OmegaConf.to_container(OmegaConf.select(cfg, "hydra.sweeper.params") or OmegaConf.create({}))
        lines += [f"{k}={v}" for k, v in flatten(params).items()]
        lines += [str(o) for o in OmegaConf.select(cfg, "hydra.overrides.task") or []]
    parser, found = OverridesParser.create(), set()
    for line in lines:
        try:
            (override,) = parser.parse_overrides([line])
        except Exception:  # noqa: BLE001 - a line Hydra itself ran with; an odd one only loses its tag
            continue
        if log_tagged(override):
            found.add(override.get_key_element().lstrip("+"))
    return found


def key_scales(runs: list[Run]) -> dict[str, str]:
    """Each short swept key's scale: categorical (not all numbers), log (positive, and declared log
    by the sweep or spread over LOG_SPAN or more: learning rates), else linear. Plots and the
    parameter-importance study read it from here."""
    declared = log_declared(runs) if runs else set()
    scales = {}
    for key in runs[0].swept if runs else []:
        numbers = as_numbers([r.swept[key] for r in runs])
        if numbers is None:
            scales[key] = CATEGORICAL
        elif min(numbers) > 0 and (runs[0].swept_keys.get(key) in declared or max(numbers) / min(numbers) >= LOG_SPAN):
            scales[key] = LOG
        else:
            scales[key] = LINEAR
    return scales


def sort_key(run: Run) -> tuple:
    """Completed runs best first, then pruned ones, then runs without a val loss, failed and missing ones last."""
    loss = run.val_loss
    rank = {Status.COMPLETED: 0, Status.PRUNED: 1}.get(run.status, 2)
    return (rank, loss is None, loss if loss is not None else 0.0)


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs under ``paths``, labelled, best first; ties (failed runs) keep the job order."""
    runs = [load_run(d) for d in find_run_dirs(paths)]
    label_runs(runs)
    return sorted(runs, key=sort_key)  # sorted() is stable: job order survives among equals
