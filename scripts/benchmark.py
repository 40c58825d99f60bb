"""Benchmarks, printed as markdown tables: `python scripts/benchmark.py SUBCOMMAND [options]`.

Subcommands:
  train      training-step tokens/s, FLOP/s and MFU, plain vs fused (chunked) vocabulary loss
  generate   decoding tokens/s with and without the KV cache (random weights: speed only)

Each subcommand is a pair of functions: ``add_<name>_parser`` declares its options and
``bench_<name>`` runs it and returns a ``Result``; ``main`` prints the result's table and, with
``--json PATH``, writes it as JSON. Timings: warmup runs first, then the median of the repeats.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from article_gpt.data.tokenizer import encode
from article_gpt.model.decoding import generate
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.model.loss import linear_cross_entropy

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    command: str
    rows: list[dict[str, Any]]  # one table row each, the same keys in every row
    summary: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


# ---- shared helpers ---------------------------------------------------------------------------
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
           "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def model_config(name: str) -> GPTConfig:
    """A model preset from conf/model/<name>.yaml."""
    return GPTConfig(**OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")))


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON")


# ---- train ------------------------------------------------------------------------------------
def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="training-step speed and MFU, plain vs fused vocabulary loss",
                       description="Times the step the Trainer runs (forward, backward, gradient clipping, "
                       "AdamW) on random tokens, for each --chunks value (0 = plain logits + cross-entropy), "
                       "and the output head + loss alone. MFU is against a peak measured here with one "
                       "large matmul (fp32 on CPU, bf16 on CUDA), not a datasheet figure.")
    p.add_argument("--model", default="tiny", help="a conf/model preset (default: tiny)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--chunks", default="0,2048,4096,8192", help="loss_chunk_size values (default: 0,2048,4096,8192)")
    add_common_options(p)
    p.set_defaults(bench=bench_train)


def matmul_peak(device: torch.device, n: int = 2048) -> float:
    """FLOP/s of one square matmul: the practical peak MFU is measured against."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = statistics.median(timings(lambda: synced(device, lambda: a @ b), 2, 5))
    return 2 * n**3 / seconds


def synced(device: torch.device, fn: Callable[[], object]) -> object:
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


def time_train_step(cfg: GPTConfig, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> tuple[float, float]:
    """Median seconds of one training step, and of the output head + loss alone (fwd + bwd)."""
    device = x.device
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device).train()
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4, betas=(0.9, 0.95))
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
    head_s = statistics.median(timings(lambda: synced(device, head_and_loss), args.warmup, args.repeats))
    return step_s, head_s


def bench_train(args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    peak = matmul_peak(device)
    base = model_config(args.model)
    B, T = args.batch, base.block_size
    gen = torch.Generator().manual_seed(args.seed)
    x, y = (torch.randint(0, base.vocab_size, (B, T), generator=gen).to(device) for _ in range(2))
    flops_per_token = GPT(base).flops_per_token()
    rows = []
    for chunk in (int(c) for c in args.chunks.split(",")):
        step_s, head_s = time_train_step(GPTConfig(**{**base.to_dict(), "loss_chunk_size": chunk}), x, y, args)
        flops = flops_per_token * B * T / step_s
        rows.append({
            "loss": "plain" if chunk == 0 else f"fused, chunk {chunk}",
            "ms/step": 1e3 * step_s,
            "tokens/s": B * T / step_s,
            "head+loss ms": 1e3 * head_s,
            "head+loss share": f"{head_s / step_s:.0%}",
            "GFLOP/s": flops / 1e9,
            "MFU": f"{flops / peak:.1%}",
        })
    summary = {
        "speedup": rows[0]["ms/step"] / min(r["ms/step"] for r in rows),
        "model": f"{args.model}: block {T}, width {base.embedding_dim}, {base.num_layers} layers, "
        f"{base.heads}x{base.head_size} heads, tied {base.tie_weights}",
        "batch": f"{B} x {T} tokens",
        "flops_per_token": flops_per_token,
        "measured matmul peak GFLOP/s": round(peak / 1e9, 1),
        **environment(device),
    }
    return Result("train", rows, summary)


# ---- generate ---------------------------------------------------------------------------------
def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="decoding speed with and without the KV cache",
                       description="Greedy decoding of --new-tokens tokens (fp32, random weights), timed with "
                       "the KV cache and with the window recomputed every step.")
    p.add_argument("--model", default="small", help="a conf/model preset (default: small)")
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", default="Backpropagation is")
    p.add_argument("--prompt-tokens", type=int, help="repeat the prompt's tokens up to this length")
    add_common_options(p)
    p.set_defaults(bench=bench_generate)


def bench_generate(args: argparse.Namespace) -> Result:
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = GPT(model_config(args.model)).to(device=device, dtype=torch.float32).eval()
    ids = encode(args.prompt)
    if args.prompt_tokens:
        ids = (ids * (args.prompt_tokens // len(ids) + 1))[: args.prompt_tokens]
    prompt = torch.tensor([ids] * args.batch, device=device)
    rows, tokens = [], {}
    for use_cache in (True, False):
        run = functools.partial(generate, model, prompt, args.new_tokens, temperature=0, use_cache=use_cache)
        tokens[use_cache] = run()  # also the first warmup: the outputs are compared below
        seconds = timings(run, max(0, args.warmup - 1), args.repeats)
        median = statistics.median(seconds)
        rows.append({
            "decoding": "KV cache" if use_cache else "recompute window",
            "new tokens": args.new_tokens,
            "batch": args.batch,
            "median s": median,
            "tokens/s": args.batch * args.new_tokens / median,
            "ms/token": 1e3 * median / args.new_tokens,
            "runs (s)": [round(s, 3) for s in seconds],
        })
    cfg = model.cfg
    summary = {
        "speedup": rows[0]["tokens/s"] / rows[1]["tokens/s"],
        "same_tokens": tokens[True] == tokens[False],
        "model": f"{args.model}: block {cfg.block_size}, width {cfg.embedding_dim}, {cfg.num_layers} layers, "
        f"{cfg.heads}x{cfg.head_size} heads, {model.num_params()['params_total'] / 1e6:.1f}M params",
        "prompt_tokens": prompt.size(1),
        "window_slides": prompt.size(1) + args.new_tokens > cfg.block_size,
        **environment(device),
    }
    return Result("generate", rows, summary)


# ---- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    add_train_parser(sub)
    add_generate_parser(sub)
    return parser


def report(result: Result) -> str:
    lines = [f"## benchmark: {result.command}", "", markdown_table(result.rows), ""]
    for key, value in result.summary.items():
        shown = f"{value:.2f}x" if key == "speedup" else value  # best over the first row
        lines.append(f"- {key}: {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: Result = args.bench(args)
    result.settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "bench"}
    print(report(result), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
