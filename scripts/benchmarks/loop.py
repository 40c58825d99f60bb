"""`loop`: the Lightning training loop `python train.py` runs against a plain torch loop.

Both train the same model (the config's module, same seed), on the same batches (the run's own
DataModule), with the same fused AdamW, LR schedule and gradient clipping. The Lightning side is
the Trainer `train.py` builds (``build_module`` + ``build_trainer`` from the composed config,
with the run's ``RunRecorder``), with validation, checkpoints, progress bar and loggers off,
since the plain loop has none of them. The two run paired, step by step, in one process: after
each Lightning step a callback runs one plain-loop step (its own copy of the model, optimizer,
schedule and data iterator), so whatever other load the machine carries hits both members of
a pair alike. A Lightning step is the wall time from the end of the previous plain step to the
end of this Lightning step (fetching the batch, hooks, logging, the step); a plain step is the
same for its loop. The ratio of each pair is reported, its median over the pairs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from article_gpt.tracking.recorder import RunRecorder
from article_gpt.training.build import build_module, build_trainer
from article_gpt.training.module import lr_lambda
from benchmarks.common import ROOT, Result, environment


class PairedPlainLoop(L.Callback):
    """After each Lightning step, one step of a plain torch loop; both timed (module docstring)."""

    def __init__(self, cfg, resolved: dict, steps: int) -> None:
        from hydra.utils import instantiate

        L.seed_everything(cfg.seed, workers=True, verbose=False)
        self.datamodule = instantiate(cfg.data, _convert_="all")
        self.datamodule.setup("fit")
        module = build_module(resolved)  # the same model, built the same way
        self.model, o = module.model.train(), module.optim
        self.opt = torch.optim.AdamW(self.model.param_groups(o.weight_decay), lr=o.lr, betas=tuple(o.betas),
                                     fused=True)
        warmup = min(o.warmup_steps, steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_lambda(s, warmup, steps, o.min_lr_ratio))
        self.clip = cfg.trainer.gradient_clip_val
        self.batches = iter(())
        self.pairs: list[tuple[float, float]] = []  # (lightning s, plain s)
        self._end = None

    def _next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.datamodule.train_dataloader())
            return next(self.batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        lightning_end = time.perf_counter()
        x, y = self._next_batch()
        _, loss = self.model(x, y)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        plain_end = time.perf_counter()
        if self._end is not None:
            self.pairs.append((lightning_end - self._end, plain_end - lightning_end))
        self._end = plain_end


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loop", help="the Lightning loop of train.py against a plain torch loop",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=small dataloader.batch_size=8")
    p.add_argument("--steps", type=int, default=30, help="paired steps (default: 30)")
    p.add_argument("--skip", type=int, default=3, help="first pairs left out (default: 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON")
    p.set_defaults(bench=bench)


def config(overrides: list[str], steps: int, tmp: str):
    fixed = [f"paths.output_dir={tmp}", "logger=none", "callbacks=none", "++trainer.limit_val_batches=0",
             "trainer.num_sanity_val_steps=0", f"trainer.max_steps={steps}", "trainer.max_epochs=1000",
             "sample.max_new_tokens=0"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *fixed])
    return cfg, OmegaConf.to_container(cfg, resolve=True)


def bench(args: argparse.Namespace) -> Result:
    import tempfile

    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        cfg, resolved = config(args.overrides, args.steps, tmp)
        tokens = cfg.dataloader.batch_size * cfg.model.block_size
        plain = PairedPlainLoop(cfg, resolved, args.steps)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="all")
        module = build_module(resolved)
        trainer = build_trainer(cfg, [], [RunRecorder(), plain], tmp)
        trainer.fit(module, datamodule=datamodule)
    pairs = plain.pairs[args.skip:]
    ratios = [lt / pt for lt, pt in pairs]
    rows = [{"loop": name, "pairs": len(pairs), "median ms/step": 1e3 * statistics.median(ts),
             "fastest ms/step": 1e3 * min(ts), "tokens/s (median)": tokens / statistics.median(ts)}
            for name, ts in (("lightning", [p[0] for p in pairs]), ("plain torch", [p[1] for p in pairs]))]
    summary = {
        "lightning / plain, median of the paired ratios": round(statistics.median(ratios), 4),
        "paired ratios, quartiles": " ".join(f"{q:.3f}" for q in statistics.quantiles(ratios, n=4)),
        "config": " ".join(args.overrides) or "defaults",
        "model": f"{cfg.model.num_layers} layers, width {cfg.model.embedding_dim}, block {cfg.model.block_size}, "
        f"batch {cfg.dataloader.batch_size}",
        **environment(torch.device("cpu")),
    }
    return Result("loop", rows, summary)
