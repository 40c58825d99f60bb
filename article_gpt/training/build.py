"""The objects a run fits: the LightningModule and the configured Trainer."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig

from article_gpt.training.module import GPTModule


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
