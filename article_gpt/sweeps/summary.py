"""A sweep's report from its records: summary.csv, summary.md and comparison.png.

The runs come from ``records.load_runs`` (disk only), so the same report comes out for a sweep
that just ended under any launcher and for runs from different days put side by side.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from article_gpt.runs.record import MISSING, Status
from article_gpt.sweeps import seeds
from article_gpt.sweeps.importance import MIN_CONFIGURATIONS, importance
from article_gpt.sweeps.plot import plot_comparison, plot_history
from article_gpt.sweeps.records import CSV_METRICS, Run, display_value
from article_gpt.sweeps.seeds import Configuration


def _fmt_count(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "-"
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)}m {int(s % 60):02d}s"


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def markdown_table(runs: list[Run]) -> str:
    swept = list(runs[0].swept) if runs else []
    with_error = any(not r.ok for r in runs)
    head = ["job", *swept, "params", "non-emb params", "best val loss", "val ppl", "tokens seen", "train FLOPs",
            "tokens/s", "MFU", "wall time",
            "status", *(["error"] if with_error else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in runs:
        m = r.metrics
        cells = [r.label, *map(display_value, r.swept.values()), _fmt_count(m.get("params_total")),
                 _fmt_count(m.get("params_non_embedding")), _fmt(r.val_loss, ".4f"), _fmt(m.get("val_ppl"), ".1f"),
                 _fmt_count(m.get("tokens_seen")), _fmt(m.get("train_flops"), ".3g"),
                 _fmt(m.get("tokens_per_sec"), ".0f"), _fmt(m.get("mfu"), ".1%"), _fmt_seconds(m.get("elapsed_s")),
                 r.status]
        if with_error:
            cells.append((r.error or "") if not r.ok else "")
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def failure_line(runs: list[Run]) -> str | None:
    """``"1 of 3 jobs failed"``, or None when every run completed."""
    bad = [r.status for r in runs if not r.ok]  # pruned trials stopped on purpose
    if not bad:
        return None
    if set(bad) == {Status.FAILED}:
        return f"{len(bad)} of {len(runs)} jobs failed"
    kinds = ", ".join(f"{bad.count(s)} {s}" for s in dict.fromkeys(bad))
    return f"{len(bad)} of {len(runs)} jobs did not complete ({kinds})"


SEED_COLUMNS = ["config_rank", "config_val_loss_mean", "config_val_loss_std", "config_n"]  # a seeded sweep's


def seeds_table(configs: list[Configuration]) -> str:
    """One row per configuration, ranked by mean best val loss, each marked against the best by the
    rule of article_gpt/sweeps/seeds.py."""
    keys = list(configs[0].swept) if configs else []
    head = ["rank", *keys, "mean best val loss", "std", "n", "seeds", "vs best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    best = configs[0] if configs and configs[0].mean() is not None else None
    for i, c in enumerate(configs, 1):
        verdict = "-"
        if best is not None and c is best:
            verdict = "best"
        elif best is not None and (told := seeds.distinguishable(c, best, configs)) is not None:
            gap = c.mean() - best.mean()
            verdict = f"+{gap:.4f}" if told else f"≈ best (+{gap:.4f})"
        cells = [str(i), *map(display_value, c.swept.values()), _fmt(c.mean(), ".4f"), _fmt(c.std(), ".4f"),
                 f"{c.n()} of {len(c.runs)}", ",".join(c.seeds), verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SEEDS_RULE = ("A configuration is ≈ best (not distinguishable from it) when the gap between their means is "
              "smaller than the larger of their two standard deviations over seeds (sample std); a "
              "configuration with one completed seed takes the sweep's pooled std instead.")


def seeds_lines(configs: list[Configuration]) -> list[str]:
    """summary.md's Seeds section, for a sweep that trained configurations with several seeds."""
    if not seeds.seeded(configs):
        return []
    pooled = seeds.pooled_std(configs)
    noise = f" Seed noise (pooled std): {pooled:.4f}." if pooled is not None else ""
    return ["## Seeds", "", f"{len(configs)} configurations, ranked by the mean of their best val loss over "
            f"seeds. {SEEDS_RULE}{noise}", "", seeds_table(configs), ""]


def importance_lines(runs: list[Run], configs: list[Configuration]) -> list[str]:
    """summary.md's Importance section: which swept keys mattered (article_gpt/sweeps/importance.py)."""
    result = importance(runs, configs)
    if result is None:
        keys = [k for k in (runs[0].swept if runs else {}) if k != seeds.SEED]
        rated = sum(c.mean() is not None for c in configs)
        if len(keys) < 2 or rated >= MIN_CONFIGURATIONS:
            return []
        return ["## What mattered", "", f"Parameter importance needs at least {MIN_CONFIGURATIONS} configurations "
                f"with a result; this sweep has {rated}.", ""]
    return ["## What mattered", "", result.caption, "", result.markdown(), ""]


def write_csv(path: Path, runs: list[Run]) -> None:
    swept = list(runs[0].swept) if runs else []
    configs = seeds.configurations(runs)
    seeded = seeds.seeded(configs)
    of = {id(r): (i, c) for i, c in enumerate(configs, 1) for r in c.runs}
    cols = ["job", *swept, *CSV_METRICS, *(SEED_COLUMNS if seeded else []),
            "name", "overrides", "run_dir", "wandb_run_id", "error"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in runs:
            m = r.metrics
            w.writerow({"job": r.label, **r.swept, **{k: m.get(k) for k in CSV_METRICS}, "status": r.status,
                        "val_loss": r.val_loss, "name": r.short_name,
                        "overrides": " ".join(m.get("overrides") or [f"{k}={v}" for k, v in r.overrides.items()]),
                        "run_dir": str(r.run_dir), "wandb_run_id": m.get("wandb_run_id"), "error": r.error,
                        **(dict(zip(SEED_COLUMNS, _config_cells(*of[id(r)]))) if seeded else {})})


def _config_cells(rank: int, config: Configuration) -> tuple:
    return rank, config.mean(), config.std(), config.n()


def analysis_lines(runs: list[Run]) -> list[str]:
    """The Seeds and What-mattered sections (empty where the sweep has neither)."""
    configs = seeds.configurations(runs)
    return seeds_lines(configs) + importance_lines(runs, configs)


def summary_markdown(title: str, runs: list[Run], sections: list[str] | None = None) -> str:
    """summary.md; ``sections``: analysis_lines(runs), when the caller has them already."""
    done = [r for r in runs if r.val_loss is not None]
    configs = seeds.configurations(runs)
    lines = [f"# {title}", ""]
    facts = [f"{len(runs)} runs", f"swept: {', '.join(runs[0].swept) if runs and runs[0].swept else 'nothing'}"]
    if seeds.seeded(configs) and configs[0].mean() is not None:
        facts.append(f"best configuration: {configs[0].name} (mean val loss {configs[0].mean():.4f} "
                     f"over {configs[0].n()} seeds)")
    elif done:
        facts.append(f"best: {done[0].display_name} (val loss {done[0].val_loss:.4f})")
    lines += ["; ".join(facts) + ". Sorted by best val loss (lower is better), runs that did not complete last.", ""]
    sections = analysis_lines(runs) if sections is None else sections
    lines += [*sections, *(["## Runs", ""] if sections else []), markdown_table(runs), ""]
    if (note := failure_line(runs)) is not None:
        lines += [f"**{note}.** Each failed job's traceback is in its run directory's error.log.", ""]
    lines += ["![val loss of every run, and best val loss against each swept key](comparison.png)", ""]
    return "\n".join(lines + search_lines(runs))


def search_lines(runs: list[Run]) -> list[str]:
    """For an Optuna search (runs that carry a trial number): trial counts, the best trial's
    parameters and the command that trains it alone, and the optimization history picture."""
    trials = [r for r in runs if isinstance(r.metrics.get("trial_number"), int)]
    if not trials:
        return []
    counts = ", ".join(f"{n} {s}" for s in (*Status, MISSING)
                       if (n := sum(r.status == s for r in trials)))
    lines = ["## Search", "", f"{len(trials)} trials ({counts}).", ""]
    done = [r for r in trials if r.status == Status.COMPLETED and r.val_loss is not None]
    if done:  # runs arrive sorted, best first
        best = done[0]
        params = ", ".join(f"{k}={display_value(v)}" for k, v in best.swept.items()) or "-"
        command = [o for o in best.metrics.get("overrides") or [] if not o.startswith(("trial=", "hparams_search="))]
        lines += [f"Best trial {best.metrics['trial_number']}: {params} (val loss {best.val_loss:.4f}).", "",
                  f"Train it alone: `python train.py {' '.join(command)}`"]
    return lines + ["", "![best val loss so far against trial number](history.png)", ""]


def write_report(runs: list[Run], out_dir: Path, title: str) -> str:
    """Write summary.csv, summary.md and comparison.png into ``out_dir``; return what the console
    shows: the runs' table, then the seeds and importance sections where the sweep has them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "summary.csv", runs)
    sections = analysis_lines(runs)
    (out_dir / "summary.md").write_text(summary_markdown(title, runs, sections), encoding="utf-8")
    plot_comparison(out_dir / "comparison.png", runs, title)
    if search_lines(runs):
        plot_history(out_dir / "history.png", runs, f"{title}: optimization history")
    return "\n".join([markdown_table(runs), *([""] + sections if sections else [])]).rstrip()
