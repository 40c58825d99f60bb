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
from article_gpt.sweeps.plot import plot_comparison, plot_history
from article_gpt.sweeps.records import CSV_METRICS, Run


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
        cells = [r.label, *r.swept.values(), _fmt_count(m.get("params_total")),
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


def write_csv(path: Path, runs: list[Run]) -> None:
    swept = list(runs[0].swept) if runs else []
    cols = ["job", *swept, *CSV_METRICS, "name", "overrides", "run_dir", "wandb_run_id", "error"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in runs:
            m = r.metrics
            w.writerow({"job": r.label, **r.swept, **{k: m.get(k) for k in CSV_METRICS}, "status": r.status,
                        "val_loss": r.val_loss, "name": r.short_name,
                        "overrides": " ".join(m.get("overrides") or [f"{k}={v}" for k, v in r.overrides.items()]),
                        "run_dir": str(r.run_dir), "wandb_run_id": m.get("wandb_run_id"), "error": r.error})


def summary_markdown(title: str, runs: list[Run]) -> str:
    done = [r for r in runs if r.val_loss is not None]
    lines = [f"# {title}", ""]
    facts = [f"{len(runs)} runs", f"swept: {', '.join(runs[0].swept) if runs and runs[0].swept else 'nothing'}"]
    if done:
        facts.append(f"best: {done[0].short_name} (val loss {done[0].val_loss:.4f})")
    lines += ["; ".join(facts) + ". Sorted by best val loss (lower is better), runs that did not complete last.", ""]
    lines += [markdown_table(runs), ""]
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
        params = ", ".join(f"{k}={v}" for k, v in best.swept.items()) or "-"
        command = [o for o in best.metrics.get("overrides") or [] if not o.startswith(("trial=", "hparams_search="))]
        lines += [f"Best trial {best.metrics['trial_number']}: {params} (val loss {best.val_loss:.4f}).", "",
                  f"Train it alone: `python train.py {' '.join(command)}`"]
    return lines + ["", "![best val loss so far against trial number](history.png)", ""]


def write_report(runs: list[Run], out_dir: Path, title: str) -> str:
    """Write summary.csv, summary.md and comparison.png into ``out_dir``; return the markdown table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "summary.csv", runs)
    (out_dir / "summary.md").write_text(summary_markdown(title, runs), encoding="utf-8")
    plot_comparison(out_dir / "comparison.png", runs, title)
    if search_lines(runs):
        plot_history(out_dir / "history.png", runs, f"{title}: optimization history")
    return markdown_table(runs)
