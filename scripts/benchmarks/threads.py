"""`threads`: when parallel jobs pay on this machine, and which ``hydra.launcher.n_jobs`` to use.

One job's training step (the model's forward, backward, clipping and fused AdamW on random
tokens) at 1, 2, ... N threads, N the cores this process may use; then, for every k > 1 that
divides N, k jobs side by side, each a process pinned to its own N/k cores with N/k threads, as
``hydra/launcher=joblib hydra.launcher.n_jobs=k`` runs them (article_gpt/parallel/cores.py). The
jobs start together and time the same number of steps; their tokens/s add up to the sweep's.

The rule: k jobs pay where their total beats one job on all N cores, i.e. where one job does not
scale to N threads (small models on many cores); the summary names the best n_jobs. Other load on
the machine skews the figures: run it on a quiet machine, and compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Result, add_common_options, environment, model_config, time_train_step

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmark.py"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("threads", help="one job's thread scaling vs k parallel jobs: which n_jobs to use",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--model", default="tiny", help="a conf/model preset (default: tiny)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--cores", type=int, help="use the first CORES cores this process may use (default: all)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one parallel job on these cores (0,1,...)
    add_common_options(p)
    p.set_defaults(bench=bench_threads)


def tokens_per_s(args: argparse.Namespace, threads: int) -> float:
    """One job's training tokens/s at ``threads`` torch threads."""
    torch.set_num_threads(threads)
    cfg = model_config(args.model)
    gen = torch.Generator().manual_seed(args.seed)
    x, y = (torch.randint(0, cfg.vocab_size, (args.batch, cfg.block_size), generator=gen) for _ in range(2))
    step_s, _ = time_train_step(cfg, x, y, args, head=False)
    return args.batch * cfg.block_size / step_s


def parallel_jobs(args: argparse.Namespace, cores: list[int], k: int) -> list[float]:
    """k jobs at once, each pinned to its own len(cores)/k cores: each job's tokens/s."""
    share = len(cores) // k
    common = ["--model", args.model, "--batch", str(args.batch), "--warmup", str(args.warmup),
              "--repeats", str(args.repeats), "--seed", str(args.seed)]
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"{i}.json" for i in range(k)]
        procs = [subprocess.Popen([sys.executable, str(BENCHMARK), "threads", *common, "--json", str(out),
                                   "--worker", ",".join(map(str, cores[i * share:(i + 1) * share]))],
                                  stdout=subprocess.DEVNULL) for i, out in enumerate(outs)]
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError("a parallel benchmark job failed")
        return [json.loads(out.read_text())["rows"][0]["tokens/s"] for out in outs]


def bench_threads(args: argparse.Namespace) -> Result:
    if args.worker:  # one of parallel_jobs' processes
        cores = [int(c) for c in args.worker.split(",")]
        os.sched_setaffinity(0, cores)
        return Result("threads", [{"tokens/s": tokens_per_s(args, len(cores))}])
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    n = len(cores)
    one = {t: tokens_per_s(args, t) for t in range(1, n + 1)}
    rows = [{"jobs": 1, "threads per job": t, "tokens/s, all jobs": v, "tokens/s per job": [round(v)],
             "vs 1 job on all cores": f"{v / one[n]:.2f}x"} for t, v in one.items()]
    for k in (k for k in range(2, n + 1) if n % k == 0):
        each = parallel_jobs(args, cores, k)
        rows.append({"jobs": k, "threads per job": n // k, "tokens/s, all jobs": sum(each),
                     "tokens/s per job": [round(v) for v in each],
                     "vs 1 job on all cores": f"{sum(each) / one[n]:.2f}x"})
    best = max((r for r in rows if r["threads per job"] * r["jobs"] == n), key=lambda r: r["tokens/s, all jobs"])
    summary = {
        "one job's scaling": f"{one[n] / one[1]:.2f}x from 1 to {n} threads (ideal {n}x)",
        "use": f"hydra.launcher.n_jobs={best['jobs']}" + (" (or the basic launcher: one job at a time)"
                                                          if best["jobs"] == 1 else ""),
        "why": f"{best['jobs']} job(s) x {best['threads per job']} threads train {best['vs 1 job on all cores']} "
               f"the tokens/s of one job on all {n} cores",
        "model": f"{args.model}, batch {args.batch}",
        **environment(torch.device("cpu")),
    }
    return Result("threads", rows, summary)
