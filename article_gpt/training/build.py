"""The objects a run fits: the LightningModule and the configured Trainer."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig

from article_gpt.recovery.checkpoint_io import AtomicCheckpointIO, ResumeState
from article_gpt.recovery.signals import GracefulStop
from article_gpt.runs.dirs import LAST as CHECKPOINT
from article_gpt.training.module import GPTModule


def build_module(resolved: dict) -> GPTModule:
    """The LightningModule from the resolved config (plain containers: they go into checkpoints).

    ``model.pretrained`` (set by model=gpt2_pretrained) is where the weights start, not part of
    the architecture: it is passed apart, so a checkpoint's ``model`` stays a plain GPTConfig."""
    model = dict(resolved["model"])
    pretrained = model.pop("pretrained", None)
    return GPTModule(model=model, optim=resolved["optim"], sample=resolved["sample"],
                     tokenizer=resolved["tokenizer"], compile=resolved["compile"], pretrained=pretrained)


def build_trainer(cfg: DictConfig, loggers: list, extra_callbacks: list, run_dir: Path) -> L.Trainer:
    """The configured Trainer. Lightning would add a checkpoint callback and a progress bar of
    its own; here both exist only when the ``callbacks`` group configures them."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks += extra_callbacks
    # last, so they save what the others recorded for the step (article_gpt/recovery/signals.py, checkpoint_io.py)
    callbacks += [ResumeState(), GracefulStop(Path(run_dir) / CHECKPOINT)]
    io = {} if "plugins" in cfg.trainer else {"plugins": [AtomicCheckpointIO()]}
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        **io,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
    )
