"""What every benchmark subcommand shares: the result record, timing, tables, the environment."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.model.loss import linear_cross_entropy
from article_gpt.tracking import mfu, peaks

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    command: str
    rows: list[dict[str, Any]]  # one table row each, the same keys in every row
    summary: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def timings(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return seconds


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    return statistics.median(timings(fn, warmup, repeats))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, list):
            return " ".join(cell(x) for x in v)
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join(" --- " for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "cpu": peaks.cpu_model() or platform.processor() or platform.machine()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def model_config(name: str, **overrides: Any) -> GPTConfig:
    """A model preset from conf/model/<name>.yaml, with fields replaced by ``overrides``."""
    fields = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"))
    return GPTConfig(**{**fields, **overrides})


def synced(device: torch.device, fn: Callable[[], object]) -> object:
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


def measured_peak(device: torch.device) -> float:
    """The matmul peak MFU is measured against, timed now, in this run (fp32 on CPU, bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return mfu.measure_matmul_peak(device, dtype, seconds=2.0)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON")


def time_train_step(cfg: GPTConfig, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
                    head: bool = True) -> tuple[float, float | None]:
    """Median seconds of one training step as the module runs it (forward, backward, clipping,
    fused AdamW), and with ``head`` of the output head + loss alone (fwd + bwd)."""
    device = x.device
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device).train()
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4, betas=(0.9, 0.95), fused=fused or None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    hidden = model.hidden(x).detach().view(x.numel(), -1).requires_grad_()

    def head_and_loss() -> None:  # the part the fused loss replaces, on real hidden states
        with autocast:
            loss = linear_cross_entropy(hidden, model.lm_head.weight, model.lm_head.bias, y.view(-1),
                                        cfg.loss_chunk_size)
        loss.backward()

    step_s = statistics.median(timings(lambda: synced(device, step), args.warmup, args.repeats))
    if not head:
        return step_s, None
    head_s = statistics.median(timings(lambda: synced(device, head_and_loss), args.warmup, args.repeats))
    return step_s, head_s
