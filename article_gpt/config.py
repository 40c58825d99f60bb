"""Validation of the composed config, before anything heavy is built.

Each failure is a ``ConfigError`` whose message names the key and the value, e.g.
``model.heads=0: must be a positive integer``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from article_gpt.errors import ConfigError
from article_gpt.tokenizer import get_encoding
from article_gpt.tracking import WANDB_MODES

PRECISIONS = {
    "64", "64-true", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true",
    "transformer-engine", "transformer-engine-float16",
}


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _positive_int(cfg: DictConfig, key: str, optional: bool = False) -> None:
    v = _get(cfg, key)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{key}={v}: must be a positive integer{' or null' if optional else ''}")


def _in_range(cfg: DictConfig, key: str, lo: float, hi: float, lo_open=False, hi_open=False, optional=False) -> None:
    v = _get(cfg, key)
    if v is None and optional:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"{key}={v}: must be a number in {interval}")


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first key whose value cannot work."""
    for key in ("model.vocab_size", "model.block_size", "model.embedding_dim", "model.num_layers",
                "model.heads", "model.head_size", "dataloader.batch_size"):
        _positive_int(cfg, key)
    _in_range(cfg, "model.dropout", 0.0, 1.0, hi_open=True)
    n_vocab = get_encoding(cfg.tokenizer).n_vocab
    if cfg.model.vocab_size < n_vocab:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size}: smaller than tokenizer "
                          f"{cfg.tokenizer!r} with {n_vocab} ids")

    nw = _get(cfg, "dataloader.num_workers")
    if isinstance(nw, bool) or not isinstance(nw, int) or nw < 0:
        raise ConfigError(f"dataloader.num_workers={nw}: must be an integer >= 0")
    if not _get(cfg, "data.train.path"):
        raise ConfigError("data.train.path: must name a file, directory or glob")
    for key in ("data.stride", "data.train.max_samples", "data.val.max_samples"):
        _positive_int(cfg, key, optional=True)
    val_path, frac = _get(cfg, "data.val.path"), _get(cfg, "data.val_fraction")
    if (val_path is None) == (frac is None):
        raise ConfigError(f"data.val.path={val_path} and data.val_fraction={frac}: set exactly one "
                          "(data=articles uses val.path, data=split uses val_fraction)")
    _in_range(cfg, "data.val_fraction", 0.0, 1.0, lo_open=True, hi_open=True, optional=True)

    _in_range(cfg, "optim.lr", 0.0, 10.0, lo_open=True)
    _in_range(cfg, "optim.weight_decay", 0.0, 10.0)
    _in_range(cfg, "optim.min_lr_ratio", 0.0, 1.0)
    w = _get(cfg, "optim.warmup_steps")
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
        raise ConfigError(f"optim.warmup_steps={w}: must be an integer >= 0")
    _in_range(cfg, "sample.temperature", 0.0, 100.0)
    _positive_int(cfg, "sample.top_k", optional=True)
    mnt = _get(cfg, "sample.max_new_tokens")
    if isinstance(mnt, bool) or not isinstance(mnt, int) or mnt < 0:
        raise ConfigError(f"sample.max_new_tokens={mnt}: must be an integer >= 0")

    _validate_trainer(cfg)
    mode = _get(cfg, "logger.wandb.mode")
    if mode is not None and mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={mode}: must be one of {', '.join(WANDB_MODES)}")


def _validate_trainer(cfg: DictConfig) -> None:
    precision = str(_get(cfg, "trainer.precision"))
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision}: unknown; use 32-true, bf16-mixed, 16-mixed, ...")
    accel = str(_get(cfg, "trainer.accelerator") or "auto")
    if accel in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accel}: no CUDA device on this machine; use trainer=cpu")
    if accel == "cpu" and precision.startswith("bf16"):
        warnings.warn(
            f"trainer.precision={precision} on CPU: without native bf16 (AVX-512 BF16/AMX) this is "
            "10-100x slower than 32-true", stacklevel=2)
    for key in ("trainer.max_epochs", "trainer.max_steps"):
        v = _get(cfg, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or (v <= 0 and v != -1)):
            raise ConfigError(f"{key}={v}: must be a positive integer, -1 or null")


def register_resolvers() -> None:
    """``${uid:}``: 6 random hex digits, the same everywhere in one composed config (the cache
    is copied into every job of a sweep), so run and sweep ids never collide, even when two
    start in the same microsecond."""
    import secrets

    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)


register_resolvers()
