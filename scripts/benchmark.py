"""Benchmarks, printed as markdown tables: `python scripts/benchmark.py SUBCOMMAND [options]`.

Subcommands:
  train       training-step tokens/s, FLOP/s and MFU, plain vs fused (chunked) vocabulary loss
  generate    decoding tokens/s with and without the KV cache; --quantize int8 adds int8 weights
  vs-nanogpt  python train.py against karpathy/nanoGPT's train.py, same shape and articles
  loop        the Lightning loop of train.py against a plain torch loop
  memory      peak memory of one training step, plain vs fused loss (default model=gpt2)
  scaling     tokens/s and MFU across the model presets and block sizes 64-1024
  threads     one job's thread scaling vs k parallel jobs: which hydra.launcher.n_jobs to use
  peak        measure this machine's fp32 matmul peak (what runs' MFU is against) into its cache

Each subcommand is a pair of functions: ``add_<name>_parser`` declares its options and
``bench_<name>`` runs it and returns a ``Result`` (the newer ones live in ``benchmarks/``, one
module each); ``main`` prints the result's table and, with ``--json PATH``, writes it as JSON.
Timings: warmup runs first, then the median of the repeats. Other load on the machine distorts
seconds: compare figures measured in the same run, and MFU against the peak measured with them.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from article_gpt.data.tokenizer import encode
from article_gpt.model.checkpoint import load_model
from article_gpt.model.decoding import generate
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.model.quantize import logits_loss, quantize_int8

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks/ subcommand modules
from benchmarks import loop, memory, nanogpt, scaling, threads  # noqa: E402
from benchmarks.common import (  # noqa: E402
    Result,
    add_common_options,
    environment,
    markdown_table,
    measured_peak,
    model_config,
    time_train_step,
    timings,
)


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


def bench_train(args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    peak = measured_peak(device)
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
    p = sub.add_parser("generate", help="decoding speed with and without the KV cache, fp32 or int8 weights",
                       description="Greedy decoding of --new-tokens tokens (random weights unless --ckpt), timed "
                       "with the KV cache and with the window recomputed every step; with --quantize int8 the "
                       "same with int8 weights (article_gpt/model/quantize.py), side by side, and with --ckpt "
                       "the validation perplexity of the checkpoint in both modes.")
    p.add_argument("--model", default="small", help="a conf/model preset (default: small)")
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", default="Backpropagation is")
    p.add_argument("--prompt-tokens", type=int, help="repeat the prompt's tokens up to this length")
    p.add_argument("--quantize", choices=["int8"], help="also time int8 weights (generate.py quantize=int8)")
    p.add_argument("--ckpt", type=Path, help="a trained checkpoint instead of random --model weights; with "
                   "--quantize also its perplexity on --val through the logits path, fp32 vs int8")
    p.add_argument("--val", type=Path, default=Path("data/val.txt"), help="text for --ckpt's perplexity")
    add_common_options(p)
    p.set_defaults(bench=bench_generate)


def _decode_rows(model: GPT, prompt: torch.Tensor, weights: str, args: argparse.Namespace,
                 tokens: dict) -> list[dict]:
    rows = []
    for use_cache in (True, False):
        run = functools.partial(generate, model, prompt, args.new_tokens, temperature=0, use_cache=use_cache)
        tokens[weights, use_cache] = run()  # also the first warmup: the outputs are compared below
        seconds = timings(run, max(0, args.warmup - 1), args.repeats)
        median = statistics.median(seconds)
        rows.append({
            "weights": weights,
            "decoding": "KV cache" if use_cache else "recompute window",
            "new tokens": args.new_tokens,
            "batch": args.batch,
            "median s": median,
            "tokens/s": args.batch * args.new_tokens / median,
            "ms/token": 1e3 * median / args.new_tokens,
            "runs (s)": [round(s, 3) for s in seconds],
        })
    return rows


def bench_generate(args: argparse.Namespace) -> Result:
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if args.ckpt is not None:
        model = load_model(args.ckpt, device).model
    else:
        model = GPT(model_config(args.model)).to(device=device, dtype=torch.float32).eval()
    ids = encode(args.prompt)
    if args.prompt_tokens:
        ids = (ids * (args.prompt_tokens // len(ids) + 1))[: args.prompt_tokens]
    prompt = torch.tensor([ids] * args.batch, device=device)
    val = torch.tensor(encode(args.val.read_text(encoding="utf-8"))) if args.ckpt and args.quantize else None
    tokens: dict = {}
    rows = _decode_rows(model, prompt, "fp32", args, tokens)
    cfg = model.cfg
    summary = {
        "speedup": rows[0]["tokens/s"] / rows[1]["tokens/s"],
        "same_tokens": tokens["fp32", True] == tokens["fp32", False],
        "model": f"{args.ckpt or args.model}: block {cfg.block_size}, width {cfg.embedding_dim}, "
        f"{cfg.num_layers} layers, {cfg.heads}x{cfg.head_size} heads, "
        f"{model.num_params()['params_total'] / 1e6:.1f}M params",
    }
    if args.quantize:
        fp32_loss = logits_loss(model, val) if val is not None else None
        before, after = quantize_int8(model)
        rows += _decode_rows(model, prompt, "int8", args, tokens)
        summary["int8 over fp32, KV cache"] = f"{rows[2]['tokens/s'] / rows[0]['tokens/s']:.2f}x"
        summary["int8 over fp32, recompute window"] = f"{rows[3]['tokens/s'] / rows[1]['tokens/s']:.2f}x"
        summary["matmul weights MB, fp32 -> int8"] = f"{before / 1e6:.1f} -> {after / 1e6:.1f}"
        a, b = tokens["fp32", True][0], tokens["int8", True][0]
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        summary["int8 greedy = fp32 greedy (row 1)"] = f"first {same} of {len(a)} tokens"
        if val is not None:
            int8_loss = logits_loss(model, val)
            summary[f"val loss fp32 / int8 ({val.numel()} tokens)"] = f"{fp32_loss:.4f} / {int8_loss:.4f}"
            summary["val ppl fp32 / int8"] = f"{math.exp(fp32_loss):.2f} / {math.exp(int8_loss):.2f}"
            summary["int8 ppl change"] = f"{math.exp(int8_loss - fp32_loss) - 1:+.3%}"
    summary.update({
        "prompt_tokens": prompt.size(1),
        "window_slides": prompt.size(1) + args.new_tokens > cfg.block_size,
        **environment(device),
    })
    return Result("generate", rows, summary)


# ---- peak -------------------------------------------------------------------------------------
def add_peak_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("peak", help="measure the fp32 matmul peak that runs' MFU is against, into its cache",
                       description="Runs square fp32 matmuls for --seconds and keeps the best figure in the "
                       "machine's cache (the higher of it and what was there), keyed by CPU model, thread "
                       "count and torch version: do it on a quiet machine.")
    p.add_argument("--seconds", type=float, default=3.0)
    add_common_options(p)
    p.set_defaults(bench=bench_peak)


def bench_peak(args: argparse.Namespace) -> Result:
    from article_gpt.tracking import mfu, peaks

    now = mfu.measure_matmul_peak(torch.device("cpu"), seconds=args.seconds)
    best, source = mfu.cached_cpu_peak(measure=True, seconds=args.seconds)
    rows = [{"measured now GFLOP/s": now / 1e9, "kept in the cache GFLOP/s": best / 1e9, "source": source}]
    return Result("peak", rows, {"cache": str(peaks.default_cache_file()), **environment(torch.device("cpu"))})


# ---- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    add_train_parser(sub)
    add_generate_parser(sub)
    nanogpt.add_parser(sub)
    loop.add_parser(sub)
    memory.add_parser(sub)
    scaling.add_parser(sub)
    threads.add_parser(sub)
    add_peak_parser(sub)
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
