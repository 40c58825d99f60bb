"""`loop`: the Lightning training loop `python train.py` runs against a plain torch loop.

Both train the same model (the config's module, same seed), on the same batches (the run's own
DataModule), with the same AdamW, LR schedule and gradient clipping. The Lightning side is the
Trainer `train.py` builds (``build_module`` + ``build_trainer`` from the composed config, with
the run's ``RunRecorder``), with validation, checkpoints, progress bar and loggers off, since
the plain loop has none of them. A step's time is the wall time between the ends of two
consecutive training steps, so it includes everything each loop does between steps (fetching
the batch, hooks, logging); the median and the fastest step are reported. Rounds alternate
between the two loops so that other load on the machine hits both alike; on a shared machine the
fastest steps (the least disturbed) compare the loops best.
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

from article_gpt.training.artifacts import RunRecorder
from article_gpt.training.build import build_module, build_trainer
from article_gpt.training.module import lr_lambda
from benchmarks.common import ROOT, Result, environment


class StepClock(L.Callback):
    """perf_counter() at the end of every training step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loop", help="the Lightning loop of train.py against a plain torch loop",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=small dataloader.batch_size=8")
    p.add_argument("--steps", type=int, default=24, help="training steps per round (default: 24)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of each loop, alternating (default: 2)")
    p.add_argument("--skip", type=int, default=3, help="first steps of a round left out (default: 3)")
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


def lightning_round(cfg, resolved, tmp: str) -> list[float]:
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    module = build_module(resolved)
    clock = StepClock()
    trainer = build_trainer(cfg, [], [RunRecorder(), clock], tmp)
    trainer.fit(module, datamodule=datamodule)
    return [b - a for a, b in zip(clock.ends, clock.ends[1:])]


def plain_round(cfg, resolved, steps: int) -> list[float]:
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    module = build_module(resolved)  # the same model, built the same way
    model, o = module.model.train(), module.optim
    opt = torch.optim.AdamW(model.param_groups(o.weight_decay), lr=o.lr, betas=tuple(o.betas), fused=True)
    warmup = min(o.warmup_steps, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, warmup, steps, o.min_lr_ratio))
    clip = cfg.trainer.gradient_clip_val
    ends, step = [], 0
    while step < steps:
        for x, y in datamodule.train_dataloader():
            _, loss = model(x, y)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            ends.append(time.perf_counter())
            step += 1
            if step == steps:
                break
    return [b - a for a, b in zip(ends, ends[1:])]


def bench(args: argparse.Namespace) -> Result:
    import tempfile

    rows, per_loop = [], {"lightning": [], "plain torch": []}
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        cfg, resolved = config(args.overrides, args.steps, tmp)
        tokens = cfg.dataloader.batch_size * cfg.model.block_size
        for r in range(args.rounds):
            for name in ("lightning", "plain torch"):
                steps = (lightning_round(cfg, resolved, tmp) if name == "lightning"
                         else plain_round(cfg, resolved, args.steps))[args.skip:]
                per_loop[name] += steps
                rows.append({"round": r + 1, "loop": name, "steps timed": len(steps),
                             "median ms/step": 1e3 * statistics.median(steps), "fastest ms/step": 1e3 * min(steps),
                             "tokens/s (median)": tokens / statistics.median(steps)})
    med = {k: statistics.median(v) for k, v in per_loop.items()}
    best = {k: min(v) for k, v in per_loop.items()}
    summary = {
        "lightning / plain, median steps": round(med["lightning"] / med["plain torch"], 4),
        # on a shared machine the fastest step of each is the one least slowed by other load
        "lightning / plain, fastest steps": round(best["lightning"] / best["plain torch"], 4),
        "config": " ".join(args.overrides) or "defaults",
        "model": f"{cfg.model.num_layers} layers, width {cfg.model.embedding_dim}, block {cfg.model.block_size}, "
        f"batch {cfg.dataloader.batch_size}",
        **environment(torch.device("cpu")),
    }
    return Result("loop", rows, summary)
