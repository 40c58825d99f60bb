"""`memory`: peak memory of one training forward + backward, plain logits + cross-entropy against
the fused chunked head + loss (default: model=gpt2, block 1024, batch 8).

Each variant runs in a fresh process (so one's peak cannot hide the other's). On the CPU the
figure is the peak resident memory during the step above the process's peak before it (model,
gradients' first use and inputs already in place: ``ru_maxrss``); on CUDA it is torch's peak
allocated device memory during the step above what was allocated before it. ``--part head``
times only the output head + loss on random hidden states (the only part that differs between
the two; minutes faster on a CPU), ``--part model`` the whole model.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

import torch

from benchmarks.common import Result, environment, model_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memory", help="peak memory of a training step, plain vs fused loss",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--model", default="gpt2", help="a conf/model preset (default: gpt2)")
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--part", choices=("model", "head"), default="model")
    p.add_argument("--chunk", type=int, default=1024, help="the fused loss's vocabulary chunk (default: 1024)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON")
    p.set_defaults(bench=bench)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def _one_step(args: dict, chunk: int, queue) -> None:
    """In a fresh process: one forward + backward; puts (MB above the resting peak, seconds)."""
    from article_gpt.model.gpt import GPT
    from article_gpt.model.loss import linear_cross_entropy

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    torch.manual_seed(0)
    cfg = model_config(args["model"], block_size=args["block"], loss_chunk_size=chunk, dropout=0.0)
    gen = torch.Generator().manual_seed(1)
    n = args["batch"] * args["block"]
    y = torch.randint(0, cfg.vocab_size, (args["batch"], args["block"]), generator=gen).to(device)
    if args["part"] == "model":
        model = GPT(cfg).to(device).train()
        x = torch.randint(0, cfg.vocab_size, (args["batch"], args["block"]), generator=gen).to(device)
        step = lambda: model(x, y)[1].backward()  # noqa: E731
    else:
        w = (0.02 * torch.randn(cfg.vocab_size, cfg.embedding_dim, generator=gen)).to(device).requires_grad_()
        h = torch.randn(n, cfg.embedding_dim, generator=gen).to(device).requires_grad_()
        step = lambda: linear_cross_entropy(h, w, None, y.view(-1), chunk).backward()  # noqa: E731
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _peak_mb(device) if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    queue.put((_peak_mb(device) - before, seconds))


def bench(args: argparse.Namespace) -> Result:
    ctx = mp.get_context("spawn")
    plain_args = {k: getattr(args, k) for k in ("model", "block", "batch", "part", "device", "threads")}
    rows = []
    for name, chunk in (("plain logits + F.cross_entropy", 0), (f"fused, chunk {args.chunk}", args.chunk)):
        queue = ctx.Queue()
        proc = ctx.Process(target=_one_step, args=(plain_args, chunk, queue))
        proc.start()
        extra_mb, seconds = queue.get()
        proc.join()
        rows.append({"loss": name, "peak memory of the step above resting (MB)": round(extra_mb),
                     "step s": round(seconds, 2)})
    cfg = model_config(args.model)
    logits_gb = args.batch * args.block * cfg.vocab_size * 4 / 1e9
    summary = {
        "saved by the fused loss (MB)": rows[0]["peak memory of the step above resting (MB)"]
        - rows[1]["peak memory of the step above resting (MB)"],
        "one fp32 logits tensor (GB)": round(logits_gb, 2),
        "shape": f"model={args.model}, block {args.block}, batch {args.batch}, part {args.part}",
        **environment(torch.device(args.device)),
    }
    return Result("memory", rows, summary)
