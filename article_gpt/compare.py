"""Compare finished runs from what they left on disk: summary.csv, summary.md, comparison.png.

Everything is read from the run directories (``metrics.json``, ``.hydra/``), never from the
process that trained them, so the same report comes out for a sweep just ended (any launcher,
jobs in other processes or on other machines) and for runs from different days put side by side.

A "swept key" is an override key whose value differs between the runs compared; a run that
does not override the key shows the value its composed config used.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from article_gpt.errors import ArticleGPTError

# Overrides that say where a run wrote, not what it trained: never a column of the comparison.
IGNORED_PREFIXES = ("hydra.", "paths.")
IGNORED_KEYS = {"tags"}
# Columns after the swept keys in summary.csv (metrics.json keys, in this order).
CSV_METRICS = ["status", "val_loss", "val_ppl", "train_loss", "params_total", "params_non_embedding",
               "flops_per_token", "tokens_per_sec", "elapsed_s", "first_step_s", "steps", "epochs"]


class NoRunsError(ArticleGPTError):
    """A path given to compare holds no run directory."""


@dataclass
class Run:
    run_dir: Path
    metrics: dict[str, Any]  # metrics.json; empty when the job died before writing it
    overrides: dict[str, str]  # key -> value as typed on the command line
    label: str = ""  # the job's name in the tables: its folder, or parent/folder when ambiguous
    swept: dict[str, str] = field(default_factory=dict)  # short swept key -> value

    @property
    def status(self) -> str:
        return self.metrics.get("status", "missing")

    @property
    def val_loss(self) -> float | None:
        v = self.metrics.get("val_loss")
        return v if isinstance(v, (int, float)) and math.isfinite(v) else None

    @property
    def error(self) -> str | None:
        if not self.metrics:
            return "no metrics.json: the job was killed before it finished (out of memory, time limit?)"
        return self.metrics.get("error")

    @property
    def short_name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.swept.items()) or self.label


def is_run_dir(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Each path is a run directory, or a folder of them (a sweep, outputs/runs)."""
    found: list[Path] = []
    for path in paths:
        if is_run_dir(path):
            found.append(path)
            continue
        if not path.is_dir():
            raise NoRunsError(f"{path}: no such directory")
        children = [p for p in path.iterdir() if p.is_dir() and is_run_dir(p)]
        if not children:
            raise NoRunsError(f"{path}: neither a run directory (metrics.json) nor a folder of runs")
        # job folders are numbers: 2 before 10
        found += sorted(children, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    unique: dict[Path, Path] = {}  # a run named twice (a sweep and one of its jobs) counts once
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["model.heads=4", "+x=1", "~y"]`` -> ``{"model.heads": "4", "x": "1", "y": "(deleted)"}``."""
    parsed = {}
    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if key.startswith(IGNORED_PREFIXES) or key in IGNORED_KEYS:
            continue
        parsed[key] = value if sep else "(deleted)"
    return parsed


def load_run(run_dir: Path) -> Run:
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    overrides = metrics.get("overrides")
    if overrides is None:
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return Run(run_dir, metrics, parse_overrides([str(o) for o in overrides]))


def configured_value(run_dir: Path, key: str) -> str:
    """The value a run used for a key it did not override: a config group's choice or a config value."""
    hydra_file, config_file = run_dir / ".hydra" / "hydra.yaml", run_dir / ".hydra" / "config.yaml"
    if hydra_file.is_file():
        choice = OmegaConf.select(OmegaConf.load(hydra_file), f"hydra.runtime.choices.{key}")
        if choice is not None:
            return str(choice)
    if config_file.is_file():
        value = OmegaConf.select(OmegaConf.load(config_file), key, default=None, throw_on_resolution_failure=False)
        if value is not None and not OmegaConf.is_config(value):
            return str(value)
    return "-"


def short_keys(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix that is unique among ``keys``: model.heads -> heads."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            others = [k for k in keys if k != key and (k == cand or k.endswith("." + cand))]
            if not others and cand not in CSV_METRICS + ["job"]:
                break
        short[key] = cand
    return short


def label_runs(runs: list[Run]) -> None:
    """Fill each run's label and swept values (the keys whose values differ across runs)."""
    names = [r.run_dir.name for r in runs]
    for r in runs:
        r.label = r.run_dir.name if names.count(r.run_dir.name) == 1 else f"{r.run_dir.parent.name}/{r.run_dir.name}"
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    values = {k: [r.overrides.get(k) or configured_value(r.run_dir, k) for r in runs] for k in keys}
    swept = [k for k in keys if len(set(values[k])) > 1]
    short = short_keys(swept)
    for i, r in enumerate(runs):
        r.swept = {short[k]: values[k][i] for k in swept}


def sort_key(run: Run) -> tuple:
    """Completed runs best first, then runs without a val loss, failed and missing ones last."""
    loss = run.val_loss
    return (run.status != "completed", loss is None, loss if loss is not None else 0.0)


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs under ``paths``, labelled, best first; ties (failed runs) keep the job order."""
    runs = [load_run(d) for d in find_run_dirs(paths)]
    label_runs(runs)
    return sorted(runs, key=sort_key)  # sorted() is stable: job order survives among equals


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
    with_error = any(r.status != "completed" for r in runs)
    head = ["job", *swept, "params", "non-emb params", "best val loss", "val ppl", "tokens/s", "wall time",
            "status", *(["error"] if with_error else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in runs:
        m = r.metrics
        cells = [r.label, *r.swept.values(), _fmt_count(m.get("params_total")),
                 _fmt_count(m.get("params_non_embedding")), _fmt(r.val_loss, ".4f"), _fmt(m.get("val_ppl"), ".1f"),
                 _fmt(m.get("tokens_per_sec"), ".0f"), _fmt_seconds(m.get("elapsed_s")), r.status]
        if with_error:
            cells.append((r.error or "") if r.status != "completed" else "")
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def failure_line(runs: list[Run]) -> str | None:
    """``"1 of 3 jobs failed"``, or None when every run completed."""
    bad = [r.status for r in runs if r.status != "completed"]
    if not bad:
        return None
    if set(bad) == {"failed"}:
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
    return "\n".join(lines)


def write_report(runs: list[Run], out_dir: Path, title: str) -> str:
    """Write summary.csv, summary.md and comparison.png into ``out_dir``; return the markdown table."""
    from article_gpt.compare_plot import plot_comparison

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "summary.csv", runs)
    (out_dir / "summary.md").write_text(summary_markdown(title, runs), encoding="utf-8")
    plot_comparison(out_dir / "comparison.png", runs, title)
    return markdown_table(runs)
