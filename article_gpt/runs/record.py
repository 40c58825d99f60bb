"""The run record: ``metrics.json``'s schema, its one writer and its one reader.

Every run leaves one record, written once when it closes (training/closing.py), and read by
everything after it: the start rule of a resumed or re-run job, ``resume=``, the sweep summary,
``scripts/compare_runs.py`` and the Optuna sweeper. The schema is :class:`RunRecord`: each field
says what it holds and, for the numbers a sweeper may optimize, which way is better, so
``optimized_metric``'s valid values and the Optuna direction derive from it.

One policy for a record that cannot be read: a missing file is "no record" (the job died before
it wrote one, or never started), anything else (unreadable, not JSON, no status) is a
:class:`RecordError` naming the file, the same one line wherever it is read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from article_gpt.errors import ArticleGPTError

FILE = "metrics.json"


class Status(str, Enum):
    """How a run ended. A str, so it is written and compared as its plain value."""

    COMPLETED = "completed"
    PRUNED = "pruned"  # an Optuna trial stopped early on purpose: not a failure
    FAILED = "failed"  # an error; error.log holds the traceback, a re-run starts afresh
    INTERRUPTED = "interrupted"  # a signal or Ctrl-C: resumable from checkpoints/last.ckpt

    @property
    def finished(self) -> bool:
        """Nothing left to do: a sweep re-run skips it, a single run refuses to overwrite it."""
        return self in (Status.COMPLETED, Status.PRUNED)

    def __str__(self) -> str:
        return self.value


MISSING = "missing"  # the status shown for a job that left no record


class RecordError(ArticleGPTError):
    """A metrics.json that exists but cannot be read as a run record."""


def _metric(goal: str | None, doc: str) -> Any:
    """A numeric field; ``goal`` (min/max) makes it a valid ``optimized_metric``."""
    return field(default=None, metadata={"goal": goal, "doc": doc})


def _fact(doc: str, default: Any = None, optional: bool = False) -> Any:
    """A field that is no metric; ``optional``: left out of metrics.json while null (the parts of
    a run that only some runs have: W&B, an Optuna trial, a re-run)."""
    meta = {"doc": doc, "optional": optional}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunRecord:
    """metrics.json, in the order its keys are written."""

    status: Status = _fact("how the run ended")
    error: str | None = _fact("one line for a run that did not complete")
    # the fit (tracking/recorder.py)
    val_loss: float | None = _metric("min", "best validation loss after training began (nats/token)")
    val_ppl: float | None = _metric("min", "exp(val_loss); null where it overflows")
    val_loss_initial: float | None = _metric("min", "validation loss before the first step")
    train_loss: float | None = _metric("min", "the last logged training loss")
    # the model and the corpus (model/gpt.py, data/corpus.py)
    params_total: int | None = _metric("min", "parameters, a tied weight counted once")
    params_non_embedding: int | None = _metric("min", "parameters outside the token and position tables")
    params_matmul: int | None = _metric("min", "parameters that take part in a matmul per token")
    flops_per_token: int | None = _metric("min", "training FLOPs per token (6N plus attention)")
    train_tokens: int | None = _metric("min", "tokens in the training split")
    val_tokens: int | None = _metric("min", "tokens in the validation split")
    # speed (tracking/recorder.py)
    tokens_per_sec: float | None = _metric("max", "training tokens per second of training-batch time, all ranks")
    model_flops_per_sec: float | None = _metric("max", "flops_per_token x tokens_per_sec")
    # compute (training/budget.py)
    tokens_seen: int | None = _metric("min", "training tokens seen, every rank")
    train_flops: float | None = _metric("min", "tokens_seen x flops_per_token")
    budget_steps: int | None = _fact("the optimizer steps a compute budget allows; null without one")
    # progress and time
    steps: int | None = _metric("min", "optimizer steps done")
    epochs: int | None = _metric("min", "epochs begun")
    end: dict | None = _fact(
        "what ended the run (training/closing.py): {by, step}, by one of early_stopping, budget, "
        "max_steps, max_time, max_epochs, signal, pruned, error; early stopping adds validation (0 = the "
        "first after training began) and reason (patience_exhausted, non_finite_metric, ...), a signal its name")
    elapsed_s: float | None = _metric("min", "wall seconds from the job's start to its close")
    first_step_s: float | None = _metric("min", "wall seconds from the job's start to its first step")
    start_to_first_step_s: float | None = _metric("min", "seconds from the process's start to the first step")
    # where it lives (training/context.py)
    best_ckpt: str | None = _fact("checkpoints/best.ckpt, when checkpointing is on")
    run_dir: str | None = _fact("the run directory")
    group: str | None = _fact("the sweep id for a sweep's jobs; the run's own id otherwise")
    name: str | None = _fact("the job's swept overrides in short form, e.g. heads=4")
    overrides: list[str] = _fact("the job's command-line overrides", [])
    wandb_run_id: str | None = _fact("the W&B run, resumed under the same id", optional=True)
    wandb_dir: str | None = _fact("the folder `wandb sync` takes", optional=True)
    wandb_mode: str | None = _fact("online, offline or disabled", optional=True)
    val_curve: list[list[float]] = _fact("[step, loss] of every validation", [])
    report_error: str | None = _fact("set when a fact could not be read at the close", optional=True)
    # history (recovery/resume.py)
    resumes: list[dict] = _fact("each resume: when, from which step and checkpoint", [])
    attempts: int | None = _fact("attempts of a re-run job (failed ones archived in attempt-<n>/)", optional=True)
    # an Optuna trial (training/pruning.py)
    trial_number: int | None = _fact("the Optuna trial this job ran", optional=True)
    study: str | None = _fact("the Optuna study", optional=True)
    pruned_at_validation: int | None = _fact("the validation a pruned trial stopped at", optional=True)
    # the process (parallel/cores.py)
    threads: int | None = _fact("torch threads the training step ran with")
    cores_given: int | None = _fact("cores this job was given")
    cores_reason: str | None = _fact("why it was given those cores")
    pinned_cores: list[int] | None = _fact("the cores it was pinned to, if any")
    # the device (tracking/mfu.py)
    mfu: float | None = _metric("max", "model FLOP/s over the peak of every device")
    peak_flops: float | None = _fact("the peak MFU divides by, per device")
    peak_source: str | None = _fact("where the peak comes from")
    peak_host_memory_mb: float | None = _metric("min", "peak resident memory of the process")
    peak_device_memory_mb: float | None = _fact("peak memory torch allocated on the GPU; null on the CPU")

    def to_dict(self) -> dict[str, Any]:
        """The record as metrics.json holds it (optional fields only where set)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None or not f.metadata.get("optional")}

    def metric(self, name: str | None) -> float:
        """The value a sweeper gets for ``optimized_metric`` (``val_loss`` when unset): NaN where
        the record has no number for it."""
        value = getattr(self, name or "val_loss", None)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """The record in ``data``; keys this version does not know are left out."""
        known = {k: v for k, v in data.items() if k in FIELDS}
        return cls(**{**known, "status": Status(data["status"])})


FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))
# the numbers a sweeper can optimize (optimized_metric), which of them are better higher, and
# the rest: settings, facts of the machine, text
OPTIMIZABLE_METRICS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.metadata.get("goal"))
MAXIMIZED = frozenset(f.name for f in dataclasses.fields(RunRecord) if f.metadata.get("goal") == "max")


def direction(metric: str) -> str:
    """The Optuna direction a metric is optimized in: its field's own goal (``maximize`` for
    MAXIMIZED, ``minimize`` for every other)."""
    return "maximize" if metric in MAXIMIZED else "minimize"
NOT_OPTIMIZABLE = tuple(name for name in FIELDS if name not in OPTIMIZABLE_METRICS)


def path(run_dir: Path) -> Path:
    return Path(run_dir) / FILE


def write(run_dir: Path, record: RunRecord) -> None:
    """metrics.json, atomically: a reader sees the old record or the new one, never half of one."""
    target = path(run_dir)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    os.replace(tmp, target)


def read(run_dir: Path) -> RunRecord | None:
    """The run's record; None when it has none; RecordError when its metrics.json is damaged."""
    file = path(run_dir)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RecordError(f"{file}: unreadable run record ({err.strerror or type(err).__name__})") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return RunRecord.from_dict(data)
    except (ValueError, KeyError, TypeError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else str(err).splitlines()[0][:120]
        raise RecordError(f"{file}: damaged run record ({what}); move it away to start that run afresh") from None
