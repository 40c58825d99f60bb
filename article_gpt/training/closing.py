"""The closing path of a run: whatever happened, the run ends recorded.

:class:`Job` collects what a run builds as it goes (cores, module, trainer, loggers); the
:func:`closing` context manager classifies how the body ended and then, in one place that never
raises past itself: ends the DDP job, releases the cores, assembles the run record from the
fields each part owns, writes metrics.json, loss.png and samples.txt (rank 0 only), closes W&B
with the run's real status, and prints the end-of-run lines.

A run that fails still writes its record (``status: failed`` and a one-line error; the
traceback goes to ``error.log``). In a multirun the failure is swallowed here, so the sweep goes
on with its next job and sweepers such as Optuna see NaN; a single run re-raises it for the
entry point to report in one line.
"""

from __future__ import annotations

import math
import signal
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch.callbacks import Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from omegaconf import DictConfig

from article_gpt.errors import ArticleGPTError, RunFailedError, describe
from article_gpt.parallel import ddp
from article_gpt.parallel.cores import CoreShare
from article_gpt.recovery import signals
from article_gpt.recovery.checkpoint_io import ResumeState
from article_gpt.recovery.resume import Start
from article_gpt.runs import dirs, record
from article_gpt.runs.record import RunRecord, Status
from article_gpt.tracking import loggers, mfu
from article_gpt.tracking.recorder import RunRecorder, write_samples
from article_gpt.tracking.report import plot_losses, report
from article_gpt.training.budget import budget_record
from article_gpt.training.context import RunContext
from article_gpt.training.pruning import OptunaPruning


@dataclass
class Job:
    """One run as it is built; every part is optional until the body has made it."""

    cfg: DictConfig
    ctx: RunContext
    start: Start
    pruning: OptunaPruning | None
    recorder: RunRecorder = field(default_factory=RunRecorder)
    t_start: float = field(default_factory=time.time)
    rank_zero: bool = field(default_factory=ddp.is_rank_zero)  # only rank 0 writes files and W&B
    rank_env: dict = field(default_factory=ddp.rank_environment)
    cores: CoreShare | None = None
    module: Any = None
    trainer: Any = None
    loggers: list = field(default_factory=list)
    derived: dict = field(default_factory=dict)  # parameters, FLOPs per token, corpus tokens
    status: Status = Status.FAILED
    error: str | None = None
    record: RunRecord | None = None

    def finish(self) -> None:
        """The body ended normally: completed, pruned, or stopped by a signal Lightning caught."""
        if self.trainer.interrupted:
            self.status = Status.INTERRUPTED
        else:
            self.status = Status.PRUNED if self.pruning and self.pruning.pruned else Status.COMPLETED

    def value(self) -> float:
        """What a sweeper gets back: the optimized metric of a completed run, else NaN."""
        if self.record is None or self.status is not Status.COMPLETED:
            return math.nan
        return self.record.metric(self.cfg.get("optimized_metric"))


@contextmanager
def closing(job: Job) -> Iterator[Job]:
    """Run the body, classify how it ended, and always close the run (module doc)."""
    try:
        yield job
    except Exception as err:
        job.status, job.error = Status.FAILED, describe(err)
        log = job.ctx.run_dir / (dirs.ERROR_LOG if job.rank_zero else f"error.rank{ddp.rank_label()}.log")
        log.write_text(traceback.format_exc())
        if not job.ctx.multirun:
            if isinstance(err, ArticleGPTError):
                raise
            raise RunFailedError(f"{job.error} (traceback in {log})") from err
    except BaseException as err:  # Ctrl-C, SIGTERM from a scheduler, SystemExit: stopped, not broken
        job.status, job.error = Status.INTERRUPTED, describe(err)
        raise
    finally:
        close(job)


def close(job: Job) -> None:
    """End DDP, release cores, record, write, finish W&B, report. Never raises."""
    ddp.end_job(job.trainer, job.rank_env, failed=not job.status.finished)
    if job.cores is not None:
        job.cores.release()
    job.record = assemble(job)
    try:
        if job.rank_zero:
            write_files(job)
        loggers.log_samples_table(job.loggers, job.module.samples if job.module else [])
    except Exception as err:  # a file that cannot be written must not leave W&B running
        print(f"note: the run's files could not all be written ({describe(err)})", flush=True)
    finally:
        rec = job.record
        summary = {"status": str(rec.status), "best_val_loss": rec.val_loss, "tokens_seen": rec.tokens_seen,
                   "train_flops": rec.train_flops, "tokens_per_sec": rec.tokens_per_sec, "mfu": rec.mfu,
                   "params_non_embedding": rec.params_non_embedding}  # the workspace's loss-vs-size panel
        loggers.finish_loggers(job.loggers, summary, failed=not job.status.finished)
    if job.rank_zero:
        report(job.record.to_dict(), job.module)


def assemble(job: Job) -> RunRecord:
    """The run record, each field from the part that owns it. A fact that cannot be read leaves
    a smaller record (with ``report_error``), never no record and an unfinished W&B run."""
    try:
        trainer = job.trainer
        own = {
            **job.recorder.record(job.t_start),
            **job.derived,
            **budget_record(trainer),
            "steps": trainer.global_step if trainer else 0,
            "epochs": trainer.current_epoch if trainer else 0,
            "end": ending(job),
            "elapsed_s": round(time.time() - job.t_start, 3),
            **_identity(job),
            **loggers.wandb_run_info(job.loggers),
            **job.start.record(_resumed_from_step(trainer)),
            **(job.pruning.record() if job.pruning else {}),
            **(job.cores.record() if job.cores else {}),
        }
        speed = {k: own.get(k) for k in ("tokens_per_sec", "flops_per_token", "threads")}
        if speed["tokens_per_sec"] and speed["flops_per_token"]:
            own["model_flops_per_sec"] = speed["flops_per_token"] * speed["tokens_per_sec"]
        precision = str(job.cfg.trainer.precision)
        own.update(mfu.run_record(trainer, speed, precision, bool(job.cfg.get("tf32"))))
        return RunRecord(status=job.status, error=job.error, **own)
    except Exception as err:  # a bug in one fact must not cost the run its record
        r = job.recorder
        return RunRecord(status=job.status, error=job.error, val_loss=r.best_val, val_loss_initial=r.initial_val,
                         **job.derived, **_identity(job), elapsed_s=round(time.time() - job.t_start, 3),
                         report_error=describe(err), val_curve=[[s, v] for s, v in r.val_curve])


def ending(job: Job) -> dict | None:
    """What ended the run (``RunRecord.end``): the first of these that holds."""
    trainer = job.trainer
    at = {"step": trainer.global_step if trainer else 0}
    if job.status is Status.INTERRUPTED:
        signum = signals.received()
        return {"by": "signal", **at, "signal": signal.Signals(signum).name if signum else None}
    if job.status is not Status.COMPLETED:
        pruned = job.status is Status.PRUNED
        return {"by": "pruned", **at, "validation": job.pruning.pruned_at} if pruned else {"by": "error", **at}
    if trainer is None:  # completed without a fit: nothing ended one
        return None
    stopper = trainer.early_stopping_callback  # its state is this fit's own (recovery/checkpoint_io.py)
    if stopper is not None and stopper.stopping_reason is not EarlyStoppingReason.NOT_STOPPED:
        r = job.recorder  # its curve holds every validation of the run, resumes included
        return {"by": "early_stopping", **at, "validation": len(r.val_curve) - (r.initial_val is not None) - 1,
                "reason": stopper.stopping_reason.name.lower()}
    budget_steps = budget_record(trainer).get("budget_steps")
    if budget_steps is not None and trainer.global_step >= budget_steps:
        return {"by": "budget", **at}
    if 0 < trainer.max_steps <= trainer.global_step:
        return {"by": "max_steps", **at}
    left = [c.time_remaining() for c in trainer.callbacks if isinstance(c, Timer)]
    if any(t is not None and t <= 0 for t in left):
        return {"by": "max_time", **at}
    return {"by": "max_epochs", **at}  # the one way left for a fit to complete


def _identity(job: Job) -> dict:
    ckpt = getattr(job.trainer, "checkpoint_callback", None) if job.trainer else None
    return {"best_ckpt": getattr(ckpt, "best_model_path", None) or None, "run_dir": str(job.ctx.run_dir),
            "group": job.ctx.group, "name": job.ctx.name, "overrides": job.ctx.overrides}


def _resumed_from_step(trainer) -> int | None:
    """The step a resumed fit started from (None for a fresh one)."""
    for c in trainer.callbacks if trainer is not None else []:
        if isinstance(c, ResumeState):
            return c.resumed_from_step
    return None


def write_files(job: Job) -> None:
    rec, run_dir = job.record, job.ctx.run_dir
    record.write(run_dir, rec)
    if job.recorder.train_curve or job.recorder.val_curve:
        plot_losses(run_dir / dirs.LOSS_PNG, job.recorder, f"{rec.group}  {rec.name}")
    if job.module is not None and job.module.samples:
        write_samples(run_dir / dirs.SAMPLES, job.module.samples)
