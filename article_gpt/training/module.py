"""The LightningModule: loss, optimizer, LR schedule and samples around the pure-torch GPT.

It holds no data and opens no files: ``save_hyperparameters`` stores the model, optimizer
and sampling settings in every checkpoint, so a checkpoint alone rebuilds the model.

Each section is a dict fed to its dataclass, whose defaults are the config files' (a docstring per
field; tests/test_presets.py checks that they agree): ``model`` to GPTConfig, ``sample`` to
SampleConfig, and ``optim`` to the OptimConfig class its ``_target_`` names (conf/optim/<name>.yaml),
which builds the optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import get_class

from article_gpt.data.tokenizer import encode, get_encoding
from article_gpt.model.checkpoint import FORMAT, FORMAT_KEY
from article_gpt.model.decoding import generate
from article_gpt.model.gpt import GPT, GPTConfig


@dataclass
class OptimConfig:
    """``optim=adamw`` (conf/optim/adamw.yaml, the default): AdamW, and the LR schedule of every
    optimizer (linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step,
    or with ``schedule=wsd`` a constant ``lr`` and a linear decay over the last ``decay_fraction``).

    Another optimizer (``optim=muon``) is one subclass, with its fields and its own ``build``, and
    one conf/optim/<name>.yaml whose ``_target_`` names that subclass and lists its fields."""

    lr: float = 1e-3
    """Peak learning rate, reached at the end of the warmup."""
    weight_decay: float = 0.1
    """Decoupled weight decay, on the >= 2-D weights only (GPT.param_groups)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW's moment decay rates, each in [0, 1)."""
    warmup_steps: int = 20
    """Optimizer steps of linear warmup from lr / warmup_steps to lr (at most the run's steps)."""
    min_lr_ratio: float = 0.1
    """The decay ends at lr * min_lr_ratio on the run's last step."""
    schedule: str = "cosine"
    """After the warmup: cosine (decay over the rest of the run) or wsd (warmup-stable-decay: lr held,
    then a linear decay over the last decay_fraction of the run's steps)."""
    decay_fraction: float = 0.2
    """schedule=wsd: the share of the run's steps, at its end, over which lr decays; in [0, 1]."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # a list in the config files and in checkpoints

    def build(self, model: GPT, device: torch.device) -> torch.optim.Optimizer:
        """The optimizer over ``model``'s parameters on ``device``."""
        # One fused kernel per parameter instead of a dozen passes over memory: on a 2-core CPU
        # the for-loop AdamW took 175 ms of a step at the default model, the fused one 24 ms.
        fused = device.type in ("cpu", "cuda")
        return torch.optim.AdamW(model.param_groups(self.weight_decay), lr=self.lr, betas=self.betas,
                                 fused=fused or None)


def optim_config(optim: dict | None) -> OptimConfig:
    """The ``optim`` section as the OptimConfig (sub)class its ``_target_`` names; without one (a
    checkpoint written before conf/optim/ existed), OptimConfig: AdamW."""
    fields = dict(optim or {})
    target = fields.pop("_target_", None)
    cls = OptimConfig if target is None else get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, OptimConfig)):
        raise TypeError(f"optim._target_={target}: not an OptimConfig (article_gpt/training/module.py)")
    return cls(**fields)


@dataclass
class SampleConfig:
    """``sample``: the text generated at the end of every validation epoch, drawn by the decoder
    generate.py uses, with its defaults for temperature, top_k and top_p (conf/generate.yaml)."""

    prompt: str = "Backpropagation is"
    """The text to continue; "" starts a fresh document (from <|endoftext|>)."""
    max_new_tokens: int = 40
    """Tokens to generate; 0 = no samples."""
    temperature: float = 0.8
    """Softmax temperature; 0 = greedy decoding."""
    top_k: int | None = 50
    """Keep the k most likely tokens; None = all."""
    top_p: float | None = 0.95
    """Keep the smallest set of most likely tokens with this much probability, in (0, 1]; None or 1 = all."""
    seed: int = 0
    """Seed of the draw: the same model gives the same sample."""


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float, schedule: str = "cosine",
              decay_fraction: float = 0.0) -> float:
    """Linear warmup to 1, then a decay to ``min_ratio`` at ``total`` steps: cosine over the rest,
    or (wsd) 1 until the last ``decay_fraction`` of the steps, then linear."""
    if step < warmup:
        return (step + 1) / warmup
    start = warmup if schedule == "cosine" else max(warmup, total - round(decay_fraction * total))
    progress = min(1.0, max(0, step - start) / max(1, total - start))
    if schedule == "wsd":
        return 1 - (1 - min_ratio) * progress
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class GPTModule(L.LightningModule):
    def __init__(
        self,
        model: dict,
        optim: dict | None = None,
        sample: dict | None = None,
        tokenizer: str = "gpt2",
        compile: bool = False,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = GPT(GPTConfig(**model))
        # GPT-2 weights to start from (a hub name or local dir, article_gpt/model/pretrained.py),
        # loaded by on_fit_start: never when a checkpoint alone rebuilds the module (generate.py),
        # nor when a fit resumes from a checkpoint (its weights are already in place).
        self.pretrained = pretrained
        self.optim = optim_config(optim)
        self.sample_cfg = SampleConfig(**(sample or {}))
        self.tokenizer, self.compile = tokenizer, compile
        self.samples: list[dict] = []  # epoch, step, prompt, text: training/closing.py saves and logs them

    def on_fit_start(self) -> None:
        # After the optimizer exists and a resumed checkpoint is restored, before the first
        # validation: the weights are copied in place, so the optimizer keeps its parameters.
        if self.pretrained and self.trainer.ckpt_path is None:
            from article_gpt.model.pretrained import load_pretrained

            load_pretrained(self.model, self.pretrained)

    def configure_model(self) -> None:
        # The compiled wrapper lives outside the module registry, so checkpoints keep the
        # plain ``model.*`` keys and load with or without compile.
        if self.compile and "_step_model" not in self.__dict__:
            object.__setattr__(self, "_step_model", torch.compile(self.model))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[FORMAT_KEY] = FORMAT  # generate.py refuses checkpoints newer than it reads

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.__dict__.get("_step_model", self.model)(idx, targets)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        _, loss = self(x, y)
        # Only on the steps the loggers write (Lightning's own rule): the progress bar reads a
        # logged loss with .item(), a device sync, and every self.log call costs host time.
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.size(0))
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        _, loss = self(x, y)
        # Lightning weights each batch's mean by batch_size, so val/loss is the per-window mean.
        # sync_dist: under DDP each rank validates its share; the mean over ranks is the val loss
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, batch_size=x.size(0), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.log("val/ppl", torch.exp(loss), sync_dist=True)  # the same on every rank; says so to DDP
        if not self.trainer.sanity_checking and self.sample_cfg.max_new_tokens > 0:
            text = self.sample()
            self.samples.append(
                {"epoch": self.current_epoch, "step": self.global_step, "prompt": self.sample_cfg.prompt, "text": text}
            )

    def sample(self, prompt: str | None = None) -> str:
        """Prompt plus a continuation drawn with the configured sampling settings."""
        cfg, enc = self.sample_cfg, get_encoding(self.tokenizer)
        prompt = cfg.prompt if prompt is None else prompt
        ids = encode(prompt, self.tokenizer) or [enc.eot_token]  # "" starts a fresh document
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        out = generate(
            self.model,
            torch.tensor([ids], device=self.device),
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            eos_id=enc.eot_token,
            generator=gen,
        )
        return prompt + enc.decode(out[0])

    def configure_optimizers(self):
        o = self.optim
        opt = o.build(self.model, self.device)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(o.warmup_steps, total)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_lambda(s, warmup, total, o.min_lr_ratio, o.schedule, o.decay_fraction))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
