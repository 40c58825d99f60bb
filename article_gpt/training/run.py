"""One training run: validate -> build -> fit -> artifacts, with W&B always closed.

A run that fails still writes ``metrics.json`` (``status: failed`` and a one-line error;
the traceback goes to ``error.log``). In a multirun the failure is returned as NaN, so the
sweep goes on with its next job and sweepers such as Optuna see a failed trial; a single run
re-raises it for the entry point to report in one line.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from article_gpt.config import validate
from article_gpt.errors import ArticleGPTError, RunFailedError, describe
from article_gpt.sweeps import records
from article_gpt.training import artifacts, tracking
from article_gpt.training.module import GPTModule

# Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates: nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@dataclass
class RunContext:
    run_dir: Path
    group: str  # the sweep id for every job of a sweep; the run's own id otherwise
    name: str  # the job's overrides in short form, e.g. "heads=4,block_size=32"
    overrides: list[str]
    multirun: bool


def short_name(overrides: list[str]) -> str:
    """``model.heads=4`` -> ``heads=4`` (the shortest unique key suffix, as in sweep summaries);
    where the run writes (``paths.*``, ``hydra.*``) and its tags are not part of its name."""
    parsed = records.parse_overrides(overrides)
    short = records.short_keys(list(parsed))
    return ",".join(f"{short[k]}={v}" for k, v in parsed.items())


def swept_overrides(job: list[str], sweep_dir: Path) -> list[str]:
    """The overrides this sweep varies, as this job got them.

    Hydra records the sweep's own command line in ``multirun.yaml`` before any job starts. A job
    override whose text is there too (``trainer=debug``) is fixed; one whose text differs
    (``model.heads=4`` from ``model.heads=2,4,8``) or that a sweeper chose is swept.
    """
    try:
        fixed = set(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)
    except Exception:  # unreadable record (e.g. a launcher without a shared disk): name by all
        return job
    return [o for o in job if o not in fixed] or job


def run_context(cfg: DictConfig) -> RunContext:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    group = Path(hc.sweep.dir).name if multirun else run_dir.name
    named = swept_overrides(overrides, Path(hc.sweep.dir)) if multirun else overrides
    return RunContext(run_dir, group, short_name(named) or run_dir.name, overrides, multirun)


def build_module(resolved: dict) -> GPTModule:
    """The LightningModule from the resolved config (plain containers: they go into checkpoints)."""
    return GPTModule(model=resolved["model"], optim=resolved["optim"], sample=resolved["sample"],
                     tokenizer=resolved["tokenizer"], compile=resolved["compile"])


def build_trainer(cfg: DictConfig, loggers: list, extra_callbacks: list, run_dir: Path) -> L.Trainer:
    """The configured Trainer. Lightning would add a checkpoint callback and a progress bar of
    its own; here both exist only when the ``callbacks`` group configures them."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks += extra_callbacks
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
    )


def train(cfg: DictConfig, ctx: RunContext | None = None) -> float:
    """Fit one model; return the optimized metric (``cfg.optimized_metric``), NaN on failure."""
    ctx = ctx or run_context(cfg)
    run_dir = ctx.run_dir
    refusal = artifacts.finished_run_refusal(run_dir)  # never touch another run's outputs
    if refusal is not None:
        if not ctx.multirun:
            raise refusal
        print(f"error: {refusal}", file=sys.stderr)  # a sweep goes on with its next job
        return math.nan
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    recorder, loggers, module, trainer = artifacts.RunRecorder(), [], None, None
    derived: dict = {}
    status, error = "failed", None
    try:
        validate(cfg)
        if cfg.tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="all")
        resolved = OmegaConf.to_container(cfg, resolve=True)
        module = build_module(resolved)
        derived = {**module.model.num_params(), "flops_per_token": module.model.flops_per_token(),
                   **datamodule.token_counts()}
        loggers = tracking.build_loggers(resolved.get("logger") or {}, run_dir, ctx.group, ctx.name,
                                         {**resolved, **derived}, resolved.get("tags"))
        trainer = build_trainer(cfg, loggers, [recorder], run_dir)
        trainer.fit(module, datamodule=datamodule)
        status = "interrupted" if trainer.interrupted else "completed"
    except Exception as err:
        error = describe(err)
        (run_dir / "error.log").write_text(traceback.format_exc())
        if not ctx.multirun:
            if isinstance(err, ArticleGPTError):
                raise
            raise RunFailedError(f"{error} (traceback in {run_dir / 'error.log'})") from err
    except BaseException as err:  # Ctrl-C, SIGTERM from a scheduler, SystemExit: stopped, not broken
        status, error = "interrupted", describe(err)
        raise
    finally:
        metrics = collect_metrics(status, error, ctx, recorder, module, trainer, derived, loggers, t_start)
        try:
            write_run_files(run_dir, metrics, recorder, module)
            tracking.log_samples_table(loggers, module.samples if module else [])
        finally:  # whatever failed above, the W&B run is closed, with the run's real status
            tracking.finish_loggers(loggers, {"status": status, "best_val_loss": metrics["val_loss"]},
                                    failed=status != "completed")
        report(metrics, module)
    value = metrics.get(cfg.get("optimized_metric") or "val_loss")
    return float(value) if status == "completed" and value is not None else math.nan


def collect_metrics(status, error, ctx, recorder, module, trainer, derived, loggers, t_start) -> dict:
    best = recorder.best_val
    ckpt = getattr(trainer, "checkpoint_callback", None) if trainer else None
    return {
        "status": status,
        "error": error,
        "val_loss": best,
        "val_ppl": math.exp(best) if best is not None else None,
        "val_loss_initial": recorder.initial_val,
        "train_loss": recorder.train_curve[-1][1] if recorder.train_curve else None,
        **derived,
        "tokens_per_sec": recorder.tokens_per_sec,
        # achieved model FLOP/s (flops_per_token x tokens/s): divide by the device's peak for MFU
        "model_flops_per_sec": (derived["flops_per_token"] * recorder.tokens_per_sec
                                if recorder.tokens_per_sec and "flops_per_token" in derived else None),
        "steps": trainer.global_step if trainer else 0,
        "epochs": trainer.current_epoch if trainer else 0,
        "elapsed_s": round(time.time() - t_start, 3),
        "first_step_s": round(recorder.first_step_wall - t_start, 3) if recorder.first_step_wall else None,
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
    best = metrics["val_loss"]
    print(f"\nrun dir:       {metrics['run_dir']}")
    print(f"status:        {metrics['status']}" + (f" ({metrics['error']})" if metrics["error"] else ""))
    if best is not None:
        first = metrics["val_loss_initial"]
        print(f"best val loss: {best:.4f} (ppl {metrics['val_ppl']:.1f})" + (f", from {first:.4f}" if first else ""))
    if metrics.get("tokens_per_sec"):
        print(f"throughput:    {metrics['tokens_per_sec']:.0f} tokens/s over {metrics['steps']} steps")
    if module is not None and module.samples:
        print(f"sample:        {module.samples[-1]['text']!r}")
