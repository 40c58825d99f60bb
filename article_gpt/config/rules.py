"""Validation of composed configs (train.py and generate.py), before anything heavy is built.

Each failure is a ``ConfigError`` whose message names the key and the value, e.g.
``model.heads=0: must be a positive integer``. Single-key rules are tables of
(key, test, what the value must be); rules that relate keys follow them. Importing this module
is cheap (no torch), so an entry point can fail fast on a bad value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from article_gpt.config.keys import LOGGER_KINDS, check_added_keys
from article_gpt.config.machine import validate_devices, validate_nodes
from article_gpt.config.paths import check_data_paths
from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import ConfigError
from article_gpt.runs.record import OPTIMIZABLE_METRICS

WANDB_MODES = ("auto", "online", "offline", "disabled")
PRECISIONS = {
    "64", "64-true", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true",
    "transformer-engine", "transformer-engine-float16",
}

Rule = tuple[Callable[[Any], bool], str]  # (test, what a passing value is)
SCALING_PARAMS = ("non_embedding", "total")  # scaling.params: N is the run record's params_<choice>


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def int_at_least(lo: int, optional: bool = False) -> Rule:
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    return (lambda v: (optional and v is None) or (_int(v) and v >= lo)), what + (" or null" if optional else "")


def number_in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False, optional: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if v is None:
            return optional
        return _number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    interval = f"{'(' if lo_open else '['}{float(lo)}, {float(hi)}{')' if hi_open else ']'}"
    return ok, f"a number in {interval}" + (" or null" if optional else "")


def one_of(*choices: Any) -> Rule:
    return (lambda v: v in choices), "one of " + ", ".join(map(str, choices))


BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
LIMIT: Rule = (lambda v: v is None or (_int(v) and (v > 0 or v == -1))), "a positive integer, -1 or null"
TEXT: Rule = (lambda v: isinstance(v, str) and v.strip() != ""), "a non-empty string"
INTEGER: Rule = _int, "an integer"


def optional(rule: Rule) -> Rule:
    """The rule, or the key left out / null (keys a preset may not set: Lightning's default)."""
    return (lambda v: v is None or rule[0](v)), rule[1] + " or null"


def _fraction_or_count(v: Any) -> bool:  # Lightning's limit_*_batches: a share (float) or a count (int)
    return (_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0)


def _devices(v: Any) -> bool:
    if _int(v):
        return v >= 1 or v == -1
    if isinstance(v, str):
        return v == "auto" or re.fullmatch(r"-1|\d+|(\d+,)+\d*", v.strip()) is not None
    return OmegaConf.is_list(v) and len(v) > 0 and all(_int(i) and i >= 0 for i in v)

TRAIN_RULES: dict[str, Rule] = {
    **{f"model.{k}": int_at_least(1) for k in ("vocab_size", "block_size", "embedding_dim", "num_layers",
                                                 "heads", "head_size")},
    "model.dropout": number_in(0, 1, hi_open=True),
    "model.loss_chunk_size": int_at_least(0),
    "model.gelu_approximate": ((lambda v: v in (None, "none", "tanh")), "none (exact GELU) or tanh (GPT-2's)"),
    "model.position": one_of("learned", "rope"),
    "model.qk_norm": BOOL,
    "model.mlp_activation": one_of("gelu", "relu2"),
    "model.zero_init_proj": BOOL,
    "model.logit_softcap": number_in(0, math.inf, lo_open=True, optional=True),
    "data.windows": one_of("random", "documents"),
    "optim.schedule": one_of("cosine", "wsd"),
    "optim.decay_fraction": number_in(0, 1),
    "optim.muon_lr": number_in(0, 10, lo_open=True, optional=True),  # optim=muon's keys
    "optim.muon_momentum": number_in(0, 1, hi_open=True, optional=True),
    "dataloader.batch_size": int_at_least(1),
    "dataloader.num_workers": int_at_least(0),
    "data.train.path": ((lambda v: isinstance(v, str) and v.strip() != ""), "a file, directory or glob"),
    "data.stride": int_at_least(1, optional=True),
    "data.train.max_samples": int_at_least(1, optional=True),
    "data.val.max_samples": int_at_least(1, optional=True),
    "data.val_fraction": number_in(0, 1, lo_open=True, hi_open=True, optional=True),
    "optim.lr": number_in(0, 10, lo_open=True),
    "optim.weight_decay": number_in(0, 10),
    "optim.min_lr_ratio": number_in(0, 1),
    "optim.warmup_steps": int_at_least(0),
    "sample.temperature": number_in(0, 100),
    "sample.top_k": int_at_least(1, optional=True),
    "sample.top_p": ((lambda v: v is None or (_number(v) and 0 < v <= 1)), "a number in (0, 1] or null"),
    "sample.max_new_tokens": int_at_least(0),
    "trainer.precision": ((lambda v: str(v) in PRECISIONS), "a Lightning precision: 32-true, bf16-mixed, ..."),
    "trainer.max_epochs": LIMIT,
    "trainer.max_steps": LIMIT,
    # types of the keys without a range of their own: a string for a number, a list for a scalar
    "seed": INTEGER,
    "tokenizer": TEXT,
    "compile": BOOL,
    "tf32": BOOL,
    "threads": ((lambda v: v == "auto" or (_int(v) and v >= 1)), "auto or a positive integer"),
    "tags": ((lambda v: OmegaConf.is_list(v) and all(isinstance(t, str) for t in v)), "a list of strings: tags=[a,b]"),
    "model.bias": BOOL,
    "model.tie_weights": BOOL,
    **{f"dataloader.{k}": BOOL for k in ("shuffle", "drop_last", "pin_memory")},
    "data.val.path": optional(TEXT),
    "optim.betas": ((lambda v: OmegaConf.is_list(v) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v)),
                    "two numbers in [0, 1): optim.betas=[0.9,0.95]"),
    "sample.prompt": ((lambda v: isinstance(v, str)), "a string"),
    "sample.seed": INTEGER,
    "trainer.accelerator": optional(one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")),
    "trainer.devices": optional((_devices, "a positive integer, -1, auto or a list of device indices")),
    "trainer.gradient_clip_val": number_in(0, math.inf, optional=True),
    "trainer.log_every_n_steps": optional(int_at_least(1)),
    "trainer.check_val_every_n_epoch": optional(int_at_least(1)),
    "trainer.val_check_interval": number_in(0, math.inf, lo_open=True, optional=True),
    "trainer.num_sanity_val_steps": optional(int_at_least(-1)),
    "trainer.accumulate_grad_batches": optional(int_at_least(1)),
    **{f"trainer.limit_{k}_batches": optional((_fraction_or_count, "an integer >= 0 or a fraction in [0.0, 1.0]"))
       for k in ("train", "val")},
    **{f"trainer.{k}": optional(BOOL) for k in ("enable_model_summary", "enable_progress_bar")},
    "trainer.deterministic": optional(((lambda v: isinstance(v, bool) or v == "warn"), "true, false or warn")),
    "callbacks.early_stopping.patience": optional(int_at_least(0)),
    "callbacks.model_checkpoint.save_top_k": optional(int_at_least(-1)),
    "callbacks.progress_bar.refresh_rate": optional(int_at_least(0)),
    "logger.wandb.init_timeout": number_in(0, math.inf, lo_open=True, optional=True),
    # compute budgets (training/budget.py): both set is allowed, the tighter one wins
    **{f"budget.{k}": ((lambda v: v is None or (_number(v) and v > 0)), "a positive number or null")
       for k in ("tokens", "flops")},
    # the scaling fit at a sweep's end (sweeps/scaling.py)
    "scaling.params": one_of(*SCALING_PARAMS),
    "scaling.predict_flops": ((lambda v: v is None or (_number(v) and v > 0)), "a positive number or null"),
}

GENERATE_RULES: dict[str, Rule] = {
    "ckpt": ((lambda v: isinstance(v, str) and v.strip() != ""), "a checkpoint file, a run directory or latest"),
    "temperature": ((lambda v: _number(v) and v >= 0), "a number >= 0 (0 = greedy)"),
    "top_k": TRAIN_RULES["sample.top_k"],  # one sampling rule: generate.py's and the training samples'
    "top_p": TRAIN_RULES["sample.top_p"],
    "max_new_tokens": int_at_least(0),
    "num_samples": int_at_least(1),
    "seed": ((lambda v: v is None or _int(v)), "an integer or null"),
    "stop_at_eot": BOOL,
    "kv_cache": BOOL,
    "compile": BOOL,
    "device": ((lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None),
               "auto, cpu, cuda or cuda:N"),
    "quantize": ((lambda v: v is None or v == "int8"), "null (fp32) or int8 (int8 weights, CPU)"),
    "out": ((lambda v: v is None or isinstance(v, str)), "a file path or null"),
}


def check_rules(cfg: DictConfig, rules: dict[str, Rule]) -> None:
    """Raise ``ConfigError`` for the first key whose value breaks its rule."""
    for key, (ok, what) in rules.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if not ok(value):
            raise ConfigError(f"{key}={value}: must be {what}")


def validate(cfg: DictConfig, hydra: DictConfig | None = None) -> None:
    """The training config: every single-key rule, then the rules that relate keys. With ``hydra``
    (the run's Hydra config), keys added with ``+`` must be read by something (config/keys.py)."""
    check_rules(cfg, TRAIN_RULES)
    check_data_paths(cfg, hydra)  # before torch: a missing corpus is one line naming its key
    n_vocab = get_encoding(cfg.tokenizer).n_vocab
    if cfg.model.vocab_size < n_vocab:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size}: smaller than tokenizer "
                          f"{cfg.tokenizer!r} with {n_vocab} ids")
    val_path, frac = OmegaConf.select(cfg, "data.val.path"), OmegaConf.select(cfg, "data.val_fraction")
    if (val_path is None) == (frac is None):
        raise ConfigError(f"data.val.path={val_path} and data.val_fraction={frac}: set exactly one "
                          "(data=articles uses val.path, data=split uses val_fraction)")
    mode = OmegaConf.select(cfg, "logger.wandb.mode")
    if mode is not None:
        check_rules(cfg, {"logger.wandb.mode": one_of(*WANDB_MODES)})
    for kind in cfg.get("logger") or {}:
        if kind not in LOGGER_KINDS:
            raise ConfigError(f"logger.{kind}: unknown logger; known: {', '.join(LOGGER_KINDS)}")
    if hydra is not None:
        choices = set(OmegaConf.select(hydra, "runtime.choices") or {})
        check_added_keys(cfg, list(OmegaConf.select(hydra, "overrides.task") or []), choices)
        validate_nodes(cfg, hydra)  # the launcher's nodes and tasks are the DDP ranks
    if cfg.model.position == "rope" and cfg.model.head_size % 2:
        raise ConfigError(f"model.head_size={cfg.model.head_size}: must be even with model.position=rope "
                          "(rotary embeddings turn pairs of channels)")
    if cfg.model.position == "rope" and cfg.model.get("pretrained"):
        raise ConfigError(f"model.position=rope with model.pretrained={cfg.model.pretrained}: GPT-2's weights "
                          "come with learned positions; use model.position=learned")
    validate_devices(cfg)  # what this machine has (config/machine.py)
    _validate_run_end(cfg)
    check_rules(cfg, {"optimized_metric": one_of(*OPTIMIZABLE_METRICS)})  # a typo would return NaN to sweepers


def _validate_run_end(cfg: DictConfig) -> None:
    """A run with no end: Lightning would train forever, and the LR schedule (spread over the run's
    steps) would fail on an infinite count after start-up, naming no key. ``max_epochs: null`` alone
    means Lightning's 1000 epochs, unless ``max_time`` is set (then it means no epoch limit)."""
    t = cfg.get("trainer") or {}
    epochs, steps, max_time = t.get("max_epochs"), t.get("max_steps", -1), t.get("max_time")
    budget = any(OmegaConf.select(cfg, f"budget.{k}") is not None for k in ("tokens", "flops"))
    if (epochs == -1 or (epochs is None and max_time is not None)) and steps in (-1, None) and not budget:
        raise ConfigError(f"trainer.max_epochs={epochs} with trainer.max_steps={steps}: the run has no end "
                          "(the LR schedule needs one); set either to a positive integer, or budget.tokens")


def validate_generate(cfg: DictConfig) -> None:
    """The generation options (conf/generate.yaml)."""
    check_rules(cfg, GENERATE_RULES)
    if cfg.quantize is not None and cfg.device.startswith("cuda"):  # the int8 kernel is torch's CPU one
        raise ConfigError(f"quantize={cfg.quantize} with device={cfg.device}: int8 decoding runs on the CPU; "
                          "use device=cpu (or auto) or quantize=null")
