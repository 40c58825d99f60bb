"""Benchmarks, printed as markdown tables: `python scripts/benchmark.py SUBCOMMAND [options]`.

Subcommands:
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

from article_gpt.generate import generate
from article_gpt.model import GPT, GPTConfig
from article_gpt.tokenizer import encode

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
    add_generate_parser(sub)
    return parser


def report(result: Result) -> str:
    lines = [f"## benchmark: {result.command}", "", markdown_table(result.rows), ""]
    for key, value in result.summary.items():
        shown = f"{value:.2f}x" if key == "speedup" else value
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
