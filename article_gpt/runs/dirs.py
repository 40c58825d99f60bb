"""Run directories: what one is, which is the latest, which is finished, and attempt archives.

A run directory is a folder Hydra set up for a job (``.hydra/overrides.yaml``) or one that holds
a run record (``metrics.json``). Single runs live under ``<log_dir>/runs/<id>/``, a sweep's
jobs under ``<log_dir>/sweeps/<id>/<job>/``. One rule says which run is the latest, for
``resume=latest`` and ``ckpt=latest`` alike: the one that wrote last (its record or a
checkpoint). No torch here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from article_gpt.errors import CheckpointError, ConfigError
from article_gpt.runs import record

CHECKPOINTS = Path("checkpoints")
LAST = CHECKPOINTS / "last.ckpt"  # the resumable checkpoint: the last validation or the interruption
BEST = CHECKPOINTS / "best.ckpt"
OVERRIDES = Path(".hydra") / "overrides.yaml"
CONFIG = Path(".hydra") / "config.yaml"  # the job's composed config, as Hydra saved it
MULTIRUN = "multirun.yaml"  # a sweep's recorded command line, in the sweep directory
OPTUNA_JOURNAL = "optuna_journal.log"  # an Optuna search's study (JournalStorage), in the sweep directory
OPTUNA_DB = "optuna.db"  # the SQLite study of a search started before the journal; it continues there


def is_database_url(storage: str) -> bool:
    """An Optuna storage names a database by a URL (``sqlite:///...``, ``postgresql://...``);
    any other text is a journal file's path (JournalStorage, as optuna-dashboard reads it)."""
    return "://" in storage
ERROR_LOG = "error.log"  # a failed run's traceback (rank 0; other DDP ranks: error.rank<n>.log)
LOSS_PNG, SAMPLES, WANDB_DIR = "loss.png", "samples.txt", "wandb"
RUN_GLOBS = ("runs/*", "sweeps/*/*")  # where runs live under a log dir
# what an attempt leaves, moved into attempt-<n>/ before a failed job runs again
ATTEMPT_FILES = (record.FILE, ERROR_LOG, str(CHECKPOINTS), SAMPLES, LOSS_PNG, WANDB_DIR, "csv", "tensorboard")


def is_run_dir(path: Path) -> bool:
    return (path / OVERRIDES).is_file() or record.path(path).is_file()


def run_checkpoint(run_dir: Path) -> Path | None:
    """A run's best checkpoint, else its last one; ``run_dir`` may also be its checkpoints/."""
    for folder in (run_dir / CHECKPOINTS, run_dir):
        for name in (BEST.name, LAST.name):
            if (folder / name).is_file():
                return folder / name
    return None


def last_written(run_dir: Path) -> float | None:
    """When the run last wrote its record or a checkpoint (mtime), None if it has neither."""
    marks = [p.stat().st_mtime for p in (record.path(run_dir), run_dir / LAST, run_dir / BEST) if p.is_file()]
    return max(marks) if marks else None


def latest_run(log_dir: Path, accept: Callable[[Path], bool] = is_run_dir) -> Path | None:
    """The run under ``log_dir`` that wrote last, among those ``accept`` takes."""
    best: tuple[float, str] | None = None
    for pattern in RUN_GLOBS:
        for run in Path(log_dir).glob(pattern):
            when = last_written(run)
            if when is not None and accept(run) and (best is None or (when, str(run)) > best):
                best = (when, str(run))
    return Path(best[1]) if best else None


def latest_resumable(log_dir: Path) -> Path:
    """``resume=latest``: the latest run that can be recomposed (its overrides are recorded)."""
    found = latest_run(log_dir, lambda run: (run / OVERRIDES).is_file())
    if found is None:
        raise ConfigError(f"resume=latest: no run with {OVERRIDES} and a {record.FILE} or checkpoint under "
                          f"{log_dir}; pass resume=<run dir>")
    return found


def resolve_checkpoint(spec: str, log_dir: Path) -> Path:
    """A checkpoint file from ``ckpt=``: a file, a run directory (its best, else its last), or
    ``latest``: the best checkpoint of the latest run that has one."""
    if spec == "latest":
        found = latest_run(log_dir, lambda run: run_checkpoint(run) is not None)
        if found is None:
            where = " or ".join(f"{g}/{CHECKPOINTS}/" for g in RUN_GLOBS)
            raise CheckpointError(f"ckpt=latest: no {where} with "
                                  f"{BEST.name} or {LAST.name} under {log_dir}; train first or pass ckpt=PATH")
        return run_checkpoint(found)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = run_checkpoint(path)
        if found is None:
            raise CheckpointError(f"ckpt={spec}: a directory without {BEST} or {LAST}")
        return found
    raise CheckpointError(f"ckpt={spec}: no such file or directory")


def finished_record(run_dir: Path) -> record.RunRecord | None:
    """The record of a finished run in ``run_dir`` (completed or pruned), else None.
    A damaged metrics.json is a RecordError: nothing decides over a record it cannot read."""
    rec = record.read(run_dir)
    return rec if rec is not None and rec.status.finished else None


def refuse_finished(run_dir: Path) -> None:
    """A single run never writes into a finished run's directory."""
    if finished_record(run_dir) is not None:
        raise ConfigError(f"{run_dir}: already holds a finished run; refusing to overwrite it")


def archive_attempt(run_dir: Path) -> Path:
    """Move a failed attempt's files into ``attempt-<n>/`` (n = 1, 2, ...): nothing is lost."""
    n = 1 + len(list(run_dir.glob("attempt-*")))
    dest = run_dir / f"attempt-{n}"
    dest.mkdir()
    ranks = [p.name for p in run_dir.glob("error.rank*.log")]
    for name in (*ATTEMPT_FILES, *ranks):
        if (run_dir / name).exists():
            shutil.move(str(run_dir / name), str(dest / name))
    return dest
