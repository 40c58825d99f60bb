"""Rebuild a trained GPT and its tokenizer name from a checkpoint alone.

A checkpoint saved by ``GPTModule`` holds ``hyper_parameters`` (the model dict, tokenizer,
...) and ``state_dict`` (``model.*`` keys), which is all inference needs: no Lightning, no
training config. Files are read with ``weights_only=True``, so a checkpoint can never run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import CheckpointError, describe
from article_gpt.model.gpt import GPT, GPTConfig

# What a checkpoint's layout is (GPTModule stamps it on save): a reader refuses a newer one in one
# line instead of failing somewhere inside. Files without the stamp predate it: format 1.
FORMAT_KEY, FORMAT = "article_gpt_format", 1
PREFIX = "model."  # GPTModule keeps the GPT as ``self.model``


@dataclass
class LoadedModel:
    model: GPT
    tokenizer: str
    path: Path


def read_checkpoint(path: Path) -> tuple[GPTConfig, str, dict[str, torch.Tensor]]:
    """The model config, tokenizer name and GPT state dict (prefix stripped) stored in ``path``."""
    try:
        # On the CPU: the file also holds optimizer moments, which would only crowd a GPU.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # every failure here means "cannot be read": say which and why
        if "Weights only load failed" in str(err):
            raise CheckpointError(f"{path}: holds pickled Python objects that weights_only=True refuses to "
                                  "load; not an Article GPT checkpoint") from None
        raise CheckpointError(f"{path}: corrupted or not a torch checkpoint ({describe(err, 160)})") from None
    written = ckpt.get(FORMAT_KEY, 1) if isinstance(ckpt, dict) else 1
    if not isinstance(written, int) or written > FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {written} is newer than this Article GPT reads "
                              f"(format {FORMAT} and older); upgrade article-gpt to load it")
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an Article GPT checkpoint (needs hyper_parameters.model and "
                              "state_dict, as saved by train.py)")
    try:
        cfg = GPTConfig(**hparams["model"])
    except TypeError as err:
        raise CheckpointError(f"{path}: hyper_parameters.model does not describe an Article GPT "
                              f"({describe(err, 160)})") from None
    weights = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    return cfg, str(hparams.get("tokenizer", "gpt2")), weights


def check_weights(path: Path, model: GPT, weights: dict[str, torch.Tensor]) -> None:
    """One clear line for the first way ``weights`` do not fit ``model`` (names and shapes)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - weights.keys())
    extra = sorted(weights.keys() - expected.keys())
    wrong = [k for k in expected if k in weights and tuple(weights[k].shape) != expected[k]]
    problem = None
    if wrong:
        k = wrong[0]
        problem = f"{PREFIX}{k} has shape {tuple(weights[k].shape)}, hyper_parameters.model gives {expected[k]}"
        problem += f" ({len(wrong) - 1} more mismatches)" if len(wrong) > 1 else ""
    elif missing:
        problem = f"{len(missing)} weights missing, e.g. {PREFIX}{missing[0]}"
    elif extra:
        problem = f"{len(extra)} unexpected weights, e.g. {PREFIX}{extra[0]}"
    if problem:
        raise CheckpointError(f"{path}: state_dict does not match its hyper_parameters.model "
                              f"(another architecture?): {problem}")


def load_model(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """The GPT stored in ``path``, in eval mode, fp32, on ``device``, without gradients."""
    cfg, tokenizer, weights = read_checkpoint(path)
    n_vocab = get_encoding(tokenizer).n_vocab
    if cfg.vocab_size < n_vocab:
        raise CheckpointError(f"{path}: model.vocab_size={cfg.vocab_size} is smaller than tokenizer "
                              f"{tokenizer!r} with {n_vocab} ids")
    try:
        with torch.device("meta"):  # shapes only: the random init would be overwritten anyway
            model = GPT(cfg)
    except Exception as err:
        raise CheckpointError(f"{path}: hyper_parameters.model cannot build a GPT ({describe(err, 160)})") from None
    check_weights(path, model, weights)
    model.load_state_dict(weights, strict=True, assign=True)
    if cfg.tie_weights:  # assign=True gave the head and the embedding separate Parameters
        model.lm_head.weight = model.tok_emb.weight
    model = model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, path)
