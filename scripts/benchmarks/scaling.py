"""`scaling`: how a training step's cost grows with the model and with the context.

Two tables from one run: every model preset at its own block size, then one width (a preset,
default ``tiny``) at block sizes 64 to 1024. Every row trains on the same number of tokens per
step (``--tokens``, batch = tokens / block), so tokens/s compare directly. MFU is against the
fp32 (CPU) or bf16 (CUDA) matmul peak measured in this run, before and after the rows (the
higher of the two), never a figure from another day.
"""

from __future__ import annotations

import argparse

import torch

from article_gpt.model.gpt import GPT
from benchmarks.common import Result, add_common_options, environment, measured_peak, model_config, time_train_step


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scaling", help="tokens/s and MFU across model presets and block sizes",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--presets", default="tiny,small,medium,seed,gpt2", help="conf/model presets (comma-separated)")
    p.add_argument("--width-preset", default="tiny", help="the preset whose width the block sweep keeps")
    p.add_argument("--blocks", default="64,128,256,512,1024", help="block sizes for the sweep")
    p.add_argument("--tokens", type=int, default=1024, help="tokens per step in every row (default: 1024)")
    add_common_options(p)
    p.set_defaults(bench=bench, warmup=1, repeats=2)


def row(table: str, name: str, cfg, args, device) -> dict:
    batch = max(1, args.tokens // cfg.block_size)
    gen = torch.Generator().manual_seed(args.seed)
    x, y = (torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=gen).to(device) for _ in range(2))
    step_s, _ = time_train_step(cfg, x, y, args, head=False)
    model = GPT(cfg)
    return {"table": table, "model": name, "width": cfg.embedding_dim, "layers": cfg.num_layers,
            "block": cfg.block_size, "batch": batch, "params": f"{model.num_params()['params_total'] / 1e6:.1f}M",
            "flops/token": model.flops_per_token(), "ms/step": 1e3 * step_s,
            "tokens/s": batch * cfg.block_size / step_s}


def bench(args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    peak_before = measured_peak(device)
    rows = [row("presets", p, model_config(p, dropout=0.0), args, device) for p in args.presets.split(",")]
    rows += [row("context", f"{args.width_preset}, block {b}", model_config(args.width_preset, block_size=int(b),
                                                                            dropout=0.0), args, device)
             for b in args.blocks.split(",")]
    peak_after = measured_peak(device)
    peak = max(peak_before, peak_after)
    for r in rows:
        r["MFU"] = f"{r['flops/token'] * r['tokens/s'] / peak:.1%}"
    summary = {
        "measured matmul peak GFLOP/s (before, after)": f"{peak_before / 1e9:.1f}, {peak_after / 1e9:.1f}",
        "tokens per step": args.tokens,
        **environment(device),
    }
    return Result("scaling", rows, summary)
