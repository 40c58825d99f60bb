"""How long a planned sweep (sweeps/plan.py) will take on this machine, from what its past runs
recorded, and the plan as the console shows it.

A job's time = its training FLOPs / (the cached fp32 matmul peak at its thread count
(tracking/peaks.py) x devices x MFU) + the seconds a job spends outside its training steps
(start-up, validation, samples, the close). MFU and those seconds come from the completed runs
under ``paths.log_dir`` (their metrics.json): the MFU of the runs nearest in FLOPs per token at
the same thread count, the median seconds outside training; where there are none, the defaults
below, said so. The jobs then fill the launcher's parallel slots in order (a search: batches of
``n_jobs`` trials, each as long as its longest), after the process's own start.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from article_gpt.parallel import cores
from article_gpt.runs import dirs, record
from article_gpt.runs.naming import short_keys
from article_gpt.sweeps.records import si
from article_gpt.tracking import peaks

if TYPE_CHECKING:
    from article_gpt.sweeps.plan import Plan

DEFAULT_MFU = 0.2  # stated where no run recorded one: tiny CPU runs record 2-10%, the default model ~60%
DEFAULT_OUTSIDE_S = 6.0  # a trainer=debug job's seconds outside its training steps on 2 cores
DEFAULT_START_S = 10.0  # python, torch and Lightning loading before the first job starts
NEAREST = 5  # past runs whose MFU is used for a job
CPU_FP32 = {"32", "32-true", None}


def parallel(cfg: DictConfig, jobs: int) -> tuple[int, str]:
    """(jobs running side by side, the launcher in words) for ``jobs`` jobs launched together."""
    launcher, n = cfg.hydra.launcher, len(cores.available_cores())
    kind = cores.launcher_kind(launcher)
    if kind == "joblib":
        at_once = min(cores.joblib_jobs(launcher.get("n_jobs"), n), n)
        why = f"joblib, hydra.launcher.n_jobs={launcher.get('n_jobs')} on {n} cores"
    elif kind == "ray":
        total = OmegaConf.select(launcher, "ray.init.num_cpus") or n
        at_once = max(1, int(total // max(1, float(OmegaConf.select(launcher, "ray.remote.num_cpus") or 1))))
        why = f"ray, {total} cores / hydra.launcher.ray.remote.num_cpus"
    elif kind == "local":
        at_once, why = jobs, "submitit_local starts every job at once"
    elif kind == "slurm":
        at_once = int(launcher.get("array_parallelism") or jobs)
        why = "SLURM array_parallelism (timed at this machine's speed)"
    else:
        at_once, why = 1, "basic launcher: one job at a time"
    return max(1, min(at_once, jobs)), why


def threads_per_process(cfg: DictConfig, job: dict, world: int) -> int:
    """torch threads of each training process, as parallel/cores.py gives them (``threads: auto``)."""
    if isinstance(job.get("threads"), int):
        return job["threads"]
    share, _ = cores.launcher_share(cfg.hydra.launcher, len(cores.available_cores()))
    return max(1, share // world)


def past_runs(log_dir: Path) -> list[record.RunRecord]:
    """The completed runs under ``log_dir`` that recorded their speed."""
    found = []
    for pattern in dirs.RUN_GLOBS:
        for run in sorted(Path(log_dir).glob(pattern)):
            try:
                rec = record.read(run)
            except record.RecordError:
                continue
            if rec and rec.status is record.Status.COMPLETED and rec.mfu and rec.tokens_per_sec \
                    and rec.elapsed_s and rec.tokens_seen and rec.flops_per_token:
                found.append(rec)
    return found


def _mfu(past: list[record.RunRecord], flops_per_token: int, threads: int) -> float | None:
    same = [r for r in past if r.threads == threads] or past
    near = sorted(same, key=lambda r: abs(math.log(r.flops_per_token / flops_per_token)))[:NEAREST]
    return statistics.median(r.mfu for r in near) if near else None


def _peak(job_cfg: DictConfig, threads: int, past: list[record.RunRecord]) -> tuple[float | None, str]:
    accelerator = OmegaConf.select(job_cfg, "trainer.accelerator")
    precision = OmegaConf.select(job_cfg, "trainer.precision")
    if accelerator in ("cpu", "auto", None) and (precision is None or str(precision) in CPU_FP32):
        flops = peaks.cached_cpu_peak(threads)
        if flops:
            return flops, f"{flops / 1e9:.0f} GFLOP/s fp32 peak (cached, {threads} threads)"
    recorded = [r.peak_flops for r in past if r.peak_flops]
    if recorded:
        flops = statistics.median(recorded)
        return flops, f"{flops / 1e9:.0f} GFLOP/s peak (median of the past runs' records)"
    return None, "no peak known: train one job first, or run `python scripts/benchmark.py peak`"


def estimate(plan: Plan, cfg: DictConfig) -> None:
    """Fill each row's ``seconds`` and the plan's wall time and how it was reckoned."""
    past = past_runs(Path(str(cfg.paths.log_dir)))
    outside = [r.elapsed_s - r.tokens_seen / r.tokens_per_sec for r in past]
    outside_s = statistics.median(outside) if outside else DEFAULT_OUTSIDE_S
    starts = [r.start_to_first_step_s - r.first_step_s for r in past if r.start_to_first_step_s and r.first_step_s]
    start_s = min(starts) if starts else DEFAULT_START_S
    peak, peak_how = _peak(cfg, plan.rows[0].threads, past)
    mfus = []
    for row in plan.rows:
        mfu = _mfu(past, row.flops_per_token, row.threads) or DEFAULT_MFU
        mfus.append(mfu)
        if peak and row.train_flops is not None:
            row.seconds = row.train_flops / (peak * row.world * mfu) + outside_s
    source = f"the median of up to {NEAREST} past runs nearest in size under {cfg.paths.log_dir}" if past \
        else f"a default (no completed run under {cfg.paths.log_dir} yet)"
    plan.how = [f"{peak_how} x MFU {statistics.median(mfus):.1%} ({source}),",
                f"+ {outside_s:.1f} s a job outside training "
                f"({'median of past runs' if outside else 'default'}), + {start_s:.0f} s to start "
                f"({'past runs' if starts else 'default'}); {plan.launcher}"]
    times = [r.seconds for r in plan.rows]
    if any(t is None for t in times):
        return
    if plan.sweeper == "optuna":
        longest = max(times)
        rounds = math.ceil(plan.n_trials / plan.batch) * math.ceil(plan.batch / plan.at_once)
        plan.wall_s = start_s + rounds * longest
    else:
        slots = [0.0] * plan.at_once
        for t in times:  # each job to the slot that frees first, in launch order
            slots[slots.index(min(slots))] += t
        plan.wall_s = start_s + max(slots)


def summary_lines(plan: Plan, where: str) -> list[str]:
    if where == "header":
        what = (f"{len(plan.rows)} job(s), {plan.sweeper} sweeper" if plan.sweeper == "basic" else
                f"Optuna search over {', '.join(plan.swept)}: n_trials={plan.n_trials}, "
                f"n_jobs={plan.batch}; the most expensive of {plan.points} point(s) of its space")
        return [f"plan: {what}; nothing was trained", f"corpus: {plan.corpus}"]
    tokens = [r.tokens for r in plan.rows]
    if plan.sweeper == "optuna":
        top = max(plan.rows, key=lambda r: r.train_flops or 0)
        n = plan.n_trials
        total = (f"total at n_trials={n}, before pruning: at most {si(None if top.tokens is None else n * top.tokens)} "
                 f"tokens, {si(None if top.train_flops is None else n * top.train_flops)} training FLOPs")
    else:
        flops = [r.train_flops for r in plan.rows]
        total = (f"total: {len(plan.rows)} job(s), {si(None if None in tokens else sum(tokens))} tokens, "
                 f"{si(None if None in flops else sum(flops))} training FLOPs")
    out = [total, f"estimated wall time: {seconds(plan.wall_s)} = training FLOPs / ({plan.how[0]}",
           f"  {plan.how[1]}"]
    if any(r.steps is None for r in plan.rows):
        out.append("a job ended only by trainer.max_time has no token count: its row shows '-'")
    return out + [f"note: {n}" for n in plan.notes]


# ---- the plan as text ----------------------------------------------------------------------------------
def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f} s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m" if s >= 3600 else f"{int(s // 60)}m {int(s % 60):02d}s"


def render(plan: Plan) -> str:
    """The plan's header, its table (a search: its costliest trial) and its totals and estimate."""
    columns = ["params", "non-emb", "FLOPs/token", "steps", "tokens", "train FLOPs", "ends at", "est. time"]
    names = {k: k if short in columns else short for k, short in short_keys(plan.swept).items()}
    head = ["job", *(names[k] for k in plan.swept), *columns]
    rows = plan.rows if plan.sweeper == "basic" else [max(plan.rows, key=lambda r: r.train_flops or 0)]
    label = (lambda i: str(i)) if plan.sweeper == "basic" else (lambda i: "max")
    cells = [[label(i), *(r.swept[k] for k in plan.swept), si(r.params_total), si(r.params_non_embedding),
              si(r.flops_per_token), str(r.steps) if r.steps is not None else "-", si(r.tokens), si(r.train_flops),
              r.limit, seconds(r.seconds)] for i, r in enumerate(rows)]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *cells)]
    table = [" | ".join(str(c).rjust(w) for c, w in zip(line, widths)) for line in [head, *cells]]
    table.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join([*summary_lines(plan, "header"), *table, *summary_lines(plan, "footer")])
