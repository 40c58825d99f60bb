"""The start rule: what a job does when it starts in a directory that already holds a run,
whether it got there by ``python train.py resume=<run dir>`` (recovery/argv.py), by a
scheduler requeueing a preempted job with its same overrides, or by a sweep re-run into its
old sweep directory (``hydra.sweep.dir=<dir>`` or ``resume_sweep=<dir>``):

- finished (``completed`` or ``pruned``): a sweep job is skipped (its recorded metric is
  returned, its files untouched); a single run refuses, unless ``resume=`` raises a limit key
  (recovery/argv.py): it then trains on from ``checkpoints/last.ckpt``, the step it ended at;
- ``interrupted``, or a ``checkpoints/last.ckpt`` without a record (killed hard): the run
  resumes from that checkpoint, in the same directory, as the same W&B run;
- ``failed``: the run starts again from scratch; the failed attempt's files move to
  ``attempt-<n>/``, so nothing is lost;
- a damaged record: nothing is decided over it; one line names the file.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from article_gpt.errors import ConfigError
from article_gpt.parallel.ddp import is_rank_zero
from article_gpt.recovery.argv import is_limit_key, override_key
from article_gpt.runs import dirs, record
from article_gpt.runs.record import RecordError, RunRecord, Status

CHECKPOINT = dirs.LAST


@dataclass
class Start:
    """How a job begins in its directory (the rule in the module doc)."""

    action: str  # fresh | resume | rerun | skip
    checkpoint: Path | None = None
    previous: RunRecord | None = None  # the earlier attempt's record
    wandb_id: str | None = None

    def record(self, resumed_from_step: int | None) -> dict:
        """The record's fields that keep the run's history across resumes and attempts."""
        history = list(self.previous.resumes if self.previous else [])
        if self.action == "resume":
            history.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "from_step": resumed_from_step or 0,
                            "checkpoint": str(self.checkpoint) if self.checkpoint else None})
        attempts = self.previous.attempts if self.previous else None
        if self.action == "rerun":
            attempts = (attempts or 1) + 1
        return {"resumes": history, "attempts": attempts}


def wandb_run_id(run_dir: Path, rec: RunRecord | None) -> str | None:
    """The W&B run id of an earlier attempt: from its record, else from the run's files."""
    if rec is not None and rec.wandb_run_id:
        return str(rec.wandb_run_id)
    runs = sorted((run_dir / dirs.WANDB_DIR).glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def plan(run_dir: Path) -> Start:
    """The rule, read from ``run_dir``'s record and checkpoint (RecordError: a damaged record)."""
    rec = record.read(run_dir)
    ckpt = run_dir / CHECKPOINT
    last = ckpt if ckpt.is_file() else None
    if rec is not None and rec.status.finished:
        return Start("skip", last, rec, wandb_run_id(run_dir, rec))
    if rec is not None and rec.status is Status.FAILED:
        return Start("rerun", None, rec)
    if (rec is not None and rec.status is Status.INTERRUPTED) or last is not None:
        return Start("resume", last, rec, wandb_run_id(run_dir, rec))
    return Start("fresh")


def check_checkpoint(start: Start, model: dict, run_dir: Path, multirun: bool) -> Start:
    """The checkpoint to resume from must hold this job's model: a job killed before it wrote
    its record (so before its overrides were recorded) may have been another job's. A sweep
    job then starts afresh (the old files kept in attempt-<n>/); a single run refuses."""
    if start.checkpoint is None:
        return start
    import torch

    from article_gpt.model.gpt import GPTConfig

    try:  # mmap: only the small hyper_parameters are read now, the weights when Lightning loads
        saved = torch.load(start.checkpoint, map_location="cpu", weights_only=True, mmap=True)
        saved = (saved.get("hyper_parameters") or {}).get("model")
    except Exception:
        return start  # unreadable: Lightning's load reports it in one line
    if saved is None:
        return start
    # a key an older checkpoint predates holds its default there (e.g. model.gelu_approximate)
    defaults = dataclasses.asdict(GPTConfig())
    saved, model = {**defaults, **saved}, {**defaults, **model}
    if saved == model:
        return start
    differ = sorted(k for k in set(saved) | set(model) if saved.get(k) != model.get(k))
    what = ", ".join(f"model.{k}={saved.get(k)} there, {model.get(k)} here" for k in differ[:3])
    if not multirun:
        raise ConfigError(f"{start.checkpoint}: holds another model ({what}); resume it with its own config")
    if is_rank_zero():
        dest = dirs.archive_attempt(run_dir)
        print(f"{run_dir}: its checkpoint holds another model ({what}); starting afresh, old files in {dest.name}/",
              flush=True)
    return Start("fresh")


def _refuse(error: ConfigError, multirun: bool) -> float:
    """A single run stops with the line; a sweep job prints it and returns NaN (the sweep goes on)."""
    if not multirun:
        raise error
    print(f"error: {error}", file=sys.stderr, flush=True)
    return math.nan


def begin(run_dir: Path, resume: str | None, multirun: bool, overrides: list[str],
          optimized_metric: str) -> Start | float:
    """Apply the rule to this job: a :class:`Start`, or for a skipped sweep job the value to return."""
    try:
        start = plan(run_dir)
    except RecordError as err:
        return _refuse(err, multirun)
    previous = start.previous.overrides if start.previous else None
    changed = [o for o in overrides if previous is not None and o not in previous
               and not is_limit_key(override_key(o)) and override_key(o) != "resume"]
    if start.action in ("skip", "resume") and changed:
        return _refuse(ConfigError(f"{changed[0]}: {run_dir} holds a run of other overrides "
                                   f"({' '.join(previous)}); refusing to mix them"), multirun)
    if start.action == "skip":
        if resume:  # resume= with a raised limit: the finished run trains on from its last checkpoint
            return Start("resume", start.checkpoint, start.previous, start.wandb_id)
        if not multirun:
            dirs.refuse_finished(run_dir)
        print(f"{run_dir}: already {start.previous.status}; skipped (files untouched)", flush=True)
        return start.previous.metric(optimized_metric)
    if not is_rank_zero():  # DDP ranks started by rank 0 follow its decision, they do not act on it
        return start
    if start.action == "rerun":
        dest = dirs.archive_attempt(run_dir)
        print(f"{run_dir}: the previous attempt failed ({start.previous.error}); "
              f"running it again, its files kept in {dest.name}/", flush=True)
    elif start.action == "resume":
        where = start.checkpoint or "the start (it stopped before its first checkpoint)"
        print(f"{run_dir}: resuming from {where}", flush=True)
    return start
