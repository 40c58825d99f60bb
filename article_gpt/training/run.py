"""One training run as a pipeline: start rule -> validate -> claim cores -> build -> fit -> close.

Where a run starts in a directory that already holds one, the start rule (recovery/resume.py)
decides first: skip, resume, run again or start fresh. The closing path (training/closing.py)
runs whatever happens after that: the record is written and W&B closed.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from article_gpt.config.rules import validate
from article_gpt.config.shape import with_pretrained_shape
from article_gpt.parallel import cores
from article_gpt.recovery import resume
from article_gpt.tracking import loggers
from article_gpt.training.budget import ComputeBudget
from article_gpt.training.build import build_module, build_trainer
from article_gpt.training.closing import Job, closing
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
    start = resume.begin(ctx.run_dir, cfg.get("resume"), ctx.multirun, ctx.overrides, cfg.get("optimized_metric"))
    if not isinstance(start, resume.Start):
        return start  # a finished sweep job (its recorded metric, its files untouched), or refused
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    job = Job(cfg, ctx, start, pruning_callback(cfg.get("trial")))
    with closing(job):
        cfg = with_pretrained_shape(cfg)
        if ctx.multirun:  # a single run was validated before its run dir existed (training/guards.py)
            validate(cfg, hydra=HydraConfig.get() if HydraConfig.initialized() else None)
        job.cores = cores.claim(cfg)  # this job's share of the cores -> torch threads
        datamodule = build(job, cfg)
        job.trainer.fit(job.module, datamodule=datamodule, ckpt_path=job.start.checkpoint)
        job.finish()
    return job.value()


def build(job: Job, cfg: DictConfig) -> L.LightningDataModule:
    """The datamodule, module, loggers and Trainer of ``job``, from its config."""
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    job.module = build_module(resolved)
    job.start = resume.check_checkpoint(job.start, dict(job.module.hparams["model"]), job.ctx.run_dir,
                                        job.ctx.multirun)
    model = job.module.model
    job.derived = {**model.num_params(), "flops_per_token": model.flops_per_token(), **datamodule.token_counts()}
    logger_cfg = resolved.get("logger") if job.rank_zero else None  # other ranks: no W&B run
    job.loggers = loggers.build_loggers(logger_cfg or {}, job.ctx.run_dir, job.ctx.group, job.ctx.name,
                                         {**resolved, **job.derived}, resolved.get("tags"), run_id=job.start.wandb_id)
    meter = ComputeBudget(**(cfg.get("budget") or {}), flops_per_token=job.derived["flops_per_token"])
    extra = [job.recorder, meter] + ([job.pruning] if job.pruning else [])
    job.trainer = build_trainer(cfg, job.loggers, extra, job.ctx.run_dir)
    return datamodule
