"""One training run: validate -> build -> fit -> artifacts, with W&B always closed.

A run that fails still writes ``metrics.json`` (``status: failed`` and a one-line error;
the traceback goes to ``error.log``). In a multirun the failure is returned as NaN, so the
sweep goes on with its next job and sweepers such as Optuna see a failed trial; a single run
re-raises it for the entry point to report in one line.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from article_gpt.config.rules import validate
from article_gpt.errors import ArticleGPTError, RunFailedError, describe
from article_gpt.parallel import cores as threads
from article_gpt.parallel import ddp as distributed
from article_gpt.recovery import resume
from article_gpt.tracking import loggers as tracking
from article_gpt.tracking import mfu
from article_gpt.tracking import recorder as artifacts
from article_gpt.tracking.report import collect_metrics, report, write_run_files
from article_gpt.training.budget import ComputeBudget
from article_gpt.training.build import build_module, build_trainer, resumed_from_step
from article_gpt.training.context import RunContext, run_context
from article_gpt.training.pruning import pruning_callback

# Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates: nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# conf/hydra/launcher/*.yaml carry our defaults under the plugins' own names, so Hydra checks them
# against the plugins' schemas (wanted) and calls that deprecated on every run (noise).
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")


def train(cfg: DictConfig, ctx: RunContext | None = None) -> float:
    """Fit one model; return the optimized metric (``cfg.optimized_metric``), NaN on failure."""
    ctx = ctx or run_context(cfg)
    run_dir = ctx.run_dir
    # a directory that already holds a run: skip it, resume it or run it again (article_gpt/recovery/resume.py)
    start = resume.begin(run_dir, cfg.get("resume"), ctx.multirun, ctx.overrides, cfg.get("optimized_metric"))
    if not isinstance(start, resume.Start):
        return start  # a finished sweep job: its recorded metric, its files untouched
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    recorder, loggers, module, trainer = artifacts.RunRecorder(), [], None, None
    derived: dict = {}
    pruning = pruning_callback(cfg.get("trial"))  # an Optuna trial's reports, else None
    status, error = "failed", None
    # DDP: only rank 0 writes the run's files and W&B run (article_gpt/parallel/ddp.py)
    rank_zero, rank_env, cores = distributed.is_rank_zero(), distributed.rank_environment(), None
    try:
        validate(cfg, hydra=HydraConfig.get() if HydraConfig.initialized() else None)  # + keys too
        cores = threads.claim(cfg)  # this job's share of the cores -> torch threads
        if cfg.tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="all")
        resolved = OmegaConf.to_container(cfg, resolve=True)
        module = build_module(resolved)
        start = resume.check_checkpoint(start, dict(module.hparams["model"]), run_dir, ctx.multirun)
        derived = {**module.model.num_params(), "flops_per_token": module.model.flops_per_token(),
                   **datamodule.token_counts()}
        logger_cfg = resolved.get("logger") if rank_zero else None  # other ranks: no W&B run
        loggers = tracking.build_loggers(logger_cfg or {}, run_dir, ctx.group, ctx.name,
                                         {**resolved, **derived}, resolved.get("tags"), run_id=start.wandb_id)
        meter = ComputeBudget(**(cfg.get("budget") or {}), flops_per_token=derived["flops_per_token"])
        trainer = build_trainer(cfg, loggers, [recorder, meter] + ([pruning] if pruning else []), run_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=start.checkpoint)
        status = "interrupted" if trainer.interrupted else "pruned" if pruning and pruning.pruned else "completed"
    except Exception as err:
        error = describe(err)
        (run_dir / ("error.log" if rank_zero else f"error.rank{distributed.rank_label()}.log")).write_text(
            traceback.format_exc())
        if not ctx.multirun:
            if isinstance(err, ArticleGPTError):
                raise
            raise RunFailedError(f"{error} (traceback in {run_dir / 'error.log'})") from err
    except BaseException as err:  # Ctrl-C, SIGTERM from a scheduler, SystemExit: stopped, not broken
        status, error = "interrupted", describe(err)
        raise
    finally:
        distributed.end_job(trainer, rank_env, failed=status not in ("completed", "pruned"))
        if cores is not None:
            cores.release()
        metrics = {"status": status, "error": error, "val_loss": None}  # replaced at once: collect never raises
        try:
            metrics = collect_metrics(status, error, ctx, recorder, module, trainer, derived, loggers, t_start)
            metrics.update(start.record(resumed_from_step(trainer)))
            metrics.update(pruning.record() if pruning else {})
            metrics.update(cores.record() if cores else {})
            metrics.update(mfu.run_record(trainer, metrics, cfg.trainer.get("precision", "32-true"), cfg.get("tf32")))
            if rank_zero:
                write_run_files(run_dir, metrics, recorder, module)
            tracking.log_samples_table(loggers, module.samples if module else [])
        finally:  # whatever failed above, the W&B run is closed, with the run's real status
            final = {"status": status, "best_val_loss": metrics["val_loss"],
                     **{k: metrics.get(k) for k in ("tokens_seen", "train_flops", "tokens_per_sec", "mfu")}}
            tracking.finish_loggers(loggers, final,
                                    failed=status not in ("completed", "pruned"))
        if rank_zero:
            report(metrics, module)
    value = metrics.get(cfg.get("optimized_metric") or "val_loss")
    return float(value) if status == "completed" and value is not None else math.nan
