"""What a run reports when it ends: metrics.json's record, the run's files, the console lines.

Nothing here may raise: it runs in the run's closing path, after training succeeded or failed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from article_gpt.errors import describe
from article_gpt.tracking import loggers as tracking
from article_gpt.tracking import recorder as artifacts
from article_gpt.training.budget import budget_record

MAX_EXP = math.log(sys.float_info.max)  # 709.78: math.exp of more raises OverflowError


def perplexity(loss: float | None) -> float | None:
    """exp(loss), or None where there is none to give: no loss, a non-finite one, or a diverged run's
    loss above ~709, whose exp overflows a float (math.exp would raise in the closing path)."""
    if loss is None or not math.isfinite(loss) or loss > MAX_EXP:
        return None
    return math.exp(loss)


def process_started_at() -> float | None:
    """Wall-clock time this process started (Linux: /proc), else None. Python's own start-up and
    every import count, as they do for a user waiting on the first step."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def collect_metrics(status, error, ctx, recorder, module, trainer, derived, loggers, t_start) -> dict:
    """metrics.json's record. Never raises: a fact that cannot be read leaves a smaller record
    (with ``report_error``) rather than no metrics.json and an unfinished W&B run."""
    try:
        return _collect(status, error, ctx, recorder, module, trainer, derived, loggers, t_start)
    except Exception as err:  # a bug in one fact must not cost the run its record
        return {"status": status, "error": error, "val_loss": recorder.best_val, "val_ppl": None,
                "val_loss_initial": recorder.initial_val, **derived, "run_dir": str(ctx.run_dir),
                "group": ctx.group, "name": ctx.name, "overrides": ctx.overrides,
                "elapsed_s": round(time.time() - t_start, 3), "report_error": describe(err),
                "val_curve": [[step, loss] for step, loss in recorder.val_curve]}


def _collect(status, error, ctx, recorder, module, trainer, derived, loggers, t_start) -> dict:
    best = recorder.best_val
    ckpt = getattr(trainer, "checkpoint_callback", None) if trainer else None
    return {
        "status": status,
        "error": error,
        "val_loss": best,
        "val_ppl": perplexity(best),
        "val_loss_initial": recorder.initial_val,
        "train_loss": recorder.train_curve[-1][1] if recorder.train_curve else None,
        **derived,
        "tokens_per_sec": recorder.tokens_per_sec,
        # achieved model FLOP/s (flops_per_token x tokens/s): divide by the device's peak for MFU
        "model_flops_per_sec": (derived["flops_per_token"] * recorder.tokens_per_sec
                                if recorder.tokens_per_sec and "flops_per_token" in derived else None),
        **budget_record(trainer),  # tokens_seen, train_flops (every rank's), budget_steps
        "steps": trainer.global_step if trainer else 0,
        "epochs": trainer.current_epoch if trainer else 0,
        "elapsed_s": round(time.time() - t_start, 3),
        "first_step_s": round(recorder.first_step_wall - t_start, 3) if recorder.first_step_wall else None,
        # from the process's own start (imports, config, data, model, sanity check): issue 10's T3
        "start_to_first_step_s": (round(recorder.first_step_wall - started, 3)
                                  if recorder.first_step_wall and (started := process_started_at()) else None),
        "best_ckpt": getattr(ckpt, "best_model_path", None) or None,
        "run_dir": str(ctx.run_dir),
        "group": ctx.group,
        "name": ctx.name,
        "overrides": ctx.overrides,
        **tracking.wandb_run_info(loggers),
        # (step, loss) of every validation: sweep comparisons read curves from disk, any launcher
        "val_curve": [[step, loss] for step, loss in recorder.val_curve],
    }


def write_run_files(run_dir: Path, metrics: dict, recorder: artifacts.RunRecorder, module) -> None:
    artifacts.write_json(run_dir / "metrics.json", metrics)
    if recorder.train_curve or recorder.val_curve:
        artifacts.plot_losses(run_dir / "loss.png", recorder, f"{metrics['group']}  {metrics['name']}")
    if module is not None and module.samples:
        artifacts.write_samples(run_dir / "samples.txt", module.samples)


def report(metrics: dict, module) -> None:
    """The end-of-run console lines: run dir, status, best val loss, throughput, the last sample."""
    try:
        _report(metrics, module)
    except Exception as err:  # the console lines are a courtesy: never the reason a run fails
        print(f"note: the end-of-run report failed ({describe(err)}); see {metrics.get('run_dir')}/metrics.json")


def _report(metrics: dict, module) -> None:
    best = metrics["val_loss"]
    print(f"\nrun dir:       {metrics['run_dir']}")
    print(f"status:        {metrics['status']}" + (f" ({metrics['error']})" if metrics["error"] else ""))
    if best is not None:
        first = metrics["val_loss_initial"]
        ppl = f"{metrics['val_ppl']:.1f}" if metrics.get("val_ppl") is not None else "inf"  # a diverged run
        print(f"best val loss: {best:.4f} (ppl {ppl})" + (f", from {first:.4f}" if first else ""))
    if metrics.get("tokens_per_sec"):
        print(f"throughput:    {metrics['tokens_per_sec']:.0f} tokens/s over {metrics['steps']} steps")
    if metrics.get("tokens_seen"):
        planned = f" (budget: {metrics['budget_steps']} steps)" if metrics.get("budget_steps") else ""
        print(f"compute:       {metrics['tokens_seen']:,} tokens, {metrics['train_flops']:.3g} FLOPs{planned}")
    if module is not None and module.samples:
        print(f"sample:        {module.samples[-1]['text']!r}")
