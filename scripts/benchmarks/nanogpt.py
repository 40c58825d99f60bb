"""`vs-nanogpt`: `python train.py` against karpathy/nanoGPT's `train.py`, same shape, same articles.

Both run one after the other in this process's run, each as its own subprocess, with the same
model shape (4 layers, width 128, 4 heads of 32, block 64 by default), batch, no dropout, no
biases, fp32, no compile, and the same number of optimizer steps. nanoGPT reads uint16 token
files: the articles are tokenized with this project's bundled GPT-2 BPE (the same ids the run
trains on) into ``train.bin``/``val.bin`` in a temporary folder, which nanoGPT's ``dataset``
option takes as an absolute path, so nothing is written into the nanoGPT checkout.

Throughput: ours is ``metrics.json``'s ``tokens_per_sec`` (all training batches' tokens over
their time); nanoGPT's is tokens per iteration over the mean of its printed per-iteration times
(its own figure, which includes fetching the batch), leaving out iteration 0 (its evaluation).
Rounds alternate between the two, so that other load on the machine hits both alike; the best
round of each is compared, and the median too. nanoGPT pads its vocabulary to 50,304.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from article_gpt.data.corpus import read_documents, tokenize_documents
from article_gpt.runs import record
from benchmarks.common import ROOT, Result, add_common_options, environment, measured_peak

ITER_LINE = re.compile(r"^iter (\d+): loss [-\d.naninf]+, time ([\d.]+)ms", re.MULTILINE)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vs-nanogpt", help="python train.py against karpathy/nanoGPT's train.py",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--nanogpt", type=Path, required=True, metavar="PATH", help="a karpathy/nanoGPT checkout")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps for each, per round (default: 40)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of each, alternating (default: 2)")
    p.add_argument("--skip", type=int, default=1, help="first nanoGPT iterations left out (default: 1)")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--ours", nargs="*", default=[], metavar="OVERRIDE", help="extra overrides for train.py")
    add_common_options(p)
    p.set_defaults(bench=bench)


def write_bins(folder: Path) -> dict[str, int]:
    """The articles' GPT-2 ids as nanoGPT's uint16 train.bin/val.bin; returns the token counts."""
    counts = {}
    for split in ("train", "val"):
        ids = tokenize_documents(read_documents(str(ROOT / "data" / f"{split}.txt")), "gpt2", None)
        np.asarray(ids, dtype=np.uint16).tofile(folder / f"{split}.bin")
        counts[split] = len(ids)
    return counts


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise SystemExit(f"error: {' '.join(cmd[:2])} exited with {proc.returncode}:\n{tail}")
    return proc.stdout


def run_nanogpt(args: argparse.Namespace, work: Path, env: dict[str, str]) -> float:
    cmd = [sys.executable, "train.py", f"--dataset={work}", f"--out_dir={work / 'out'}", "--device=cpu",
           "--compile=False", "--dtype=float32", f"--n_layer={args.layers}", f"--n_head={args.heads}",
           f"--n_embd={args.width}", f"--block_size={args.block}", f"--batch_size={args.batch}",
           "--dropout=0.0", "--bias=False", "--gradient_accumulation_steps=1", f"--max_iters={args.steps - 1}",
           f"--lr_decay_iters={args.steps}", "--warmup_iters=20", "--learning_rate=1e-3", "--min_lr=1e-4",
           "--eval_interval=1000000", "--eval_iters=1", "--log_interval=1", "--always_save_checkpoint=False"]
    out = run(cmd, args.nanogpt, env)
    times = [float(ms) / 1e3 for it, ms in ITER_LINE.findall(out) if int(it) >= args.skip]
    if not times:
        raise SystemExit(f"error: no 'iter N: ... time X ms' lines in nanoGPT's output:\n{out[-2000:]}")
    return args.batch * args.block / statistics.mean(times)


def run_ours(args: argparse.Namespace, work: Path, env: dict[str, str], n: int) -> dict:
    run_dir = work / f"ours-{n}"
    cmd = [sys.executable, str(ROOT / "train.py"), f"model.num_layers={args.layers}",
           f"model.embedding_dim={args.width}", f"model.heads={args.heads}",
           f"model.head_size={args.width // args.heads}", f"model.block_size={args.block}", "model.dropout=0.0",
           "model.bias=false", f"dataloader.batch_size={args.batch}", "logger=none", f"trainer.max_steps={args.steps}",
           "trainer.max_epochs=1000", "sample.max_new_tokens=0", f"hydra.run.dir={run_dir}",
           f"paths.log_dir={work / 'logs'}", *([f"threads={args.threads}"] if args.threads else []), *args.ours]
    run(cmd, ROOT, env)
    return record.read(run_dir).to_dict()


def bench(args: argparse.Namespace) -> Result:
    if not (args.nanogpt / "train.py").is_file() or not (args.nanogpt / "model.py").is_file():
        raise SystemExit(f"error: --nanogpt={args.nanogpt}: not a nanoGPT checkout (no train.py/model.py)")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    device = torch.device("cpu")
    peak = measured_peak(device)
    rows, theirs, mine = [], [], []
    with tempfile.TemporaryDirectory(prefix="vs-nanogpt-") as tmp:
        work = Path(tmp)
        counts = write_bins(work)
        for r in range(args.rounds):
            theirs.append(run_nanogpt(args, work, env))
            ours = run_ours(args, work, env, r)
            mine.append(ours["tokens_per_sec"])
            for name, tps in (("karpathy/nanoGPT train.py", theirs[-1]), ("python train.py", mine[-1])):
                rows.append({"round": r + 1, "run": name, "tokens/s": tps,
                             "MFU (our FLOP count)": f"{ours['flops_per_token'] * tps / peak:.1%}"})
    summary = {
        "ratio (ours / nanoGPT), best rounds": round(max(mine) / max(theirs), 3),
        "ratio (ours / nanoGPT), median rounds": round(statistics.median(mine) / statistics.median(theirs), 3),
        "shape": f"{args.layers} layers, width {args.width}, {args.heads} heads, block {args.block}, "
        f"batch {args.batch}, no dropout, no biases, fp32, tied head",
        "steps each": args.steps,
        "articles (tokens)": f"train {counts['train']:,}, val {counts['val']:,}",
        "measured matmul peak GFLOP/s": round(peak / 1e9, 1),
        "ours: first_step_s, elapsed_s": f"{ours.get('first_step_s')}, {ours.get('elapsed_s')}",
        **environment(device),
    }
    return Result("vs-nanogpt", rows, summary)
