"""A multi-objective search's objectives and its trade-off front: the Pareto-optimal trials.

``hparams_search=optuna_pareto`` sets ``hydra.sweeper.objectives`` to run-record keys and their
directions (``[val_loss:minimize, tokens_per_sec:maximize]``); :func:`objectives` checks them
against the record's schema (article_gpt/runs/record.py) before anything is launched. When the
search ends the sweeper writes them into ``best_trial.yaml``, and :func:`report` adds the
Pareto-optimal trials to ``summary.md`` and draws ``pareto.png``, from the trials' records on disk
(the same records the summary reads), without Optuna.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from article_gpt.errors import ConfigError
from article_gpt.runs.record import OPTIMIZABLE_METRICS
from article_gpt.runs.record import direction as record_direction
from article_gpt.sweeps.seeds import Configuration, configurations, seeded

if TYPE_CHECKING:
    from article_gpt.sweeps.records import Run

PNG = "pareto.png"
DIRECTIONS = ("minimize", "maximize", "auto")  # auto (or none given): the record field's own goal


def objectives(spec: Any) -> dict[str, str]:
    """``{record key: minimize|maximize}`` from ``hydra.sweeper.objectives``, a list of ``key`` or
    ``key:direction`` (a list, so that an override replaces it whole); {} when unset (one objective:
    ``optimized_metric``). A ConfigError names the first bad entry and what is valid."""
    if spec is None:
        return {}
    spec = OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else spec
    if not isinstance(spec, (list, tuple)) or len(spec) < 2:
        raise ConfigError(f"hydra.sweeper.objectives={spec}: give two or more run-record keys, each as key or "
                          "key:direction, e.g. [val_loss:minimize,tokens_per_sec:maximize]; one objective is "
                          "optimized_metric=<key>")
    out: dict[str, str] = {}
    for entry in spec:
        key, _, direction = str(entry).partition(":")
        if key not in OPTIMIZABLE_METRICS:
            raise ConfigError(f"hydra.sweeper.objectives: {key}: not a numeric run-record key; one of "
                              f"{', '.join(OPTIMIZABLE_METRICS)}")
        if direction not in ("", *DIRECTIONS):
            raise ConfigError(f"hydra.sweeper.objectives: {entry}: a direction is one of {', '.join(DIRECTIONS)}")
        if key in out:
            raise ConfigError(f"hydra.sweeper.objectives: {key}: named twice")
        out[key] = direction if direction in ("minimize", "maximize") else record_direction(key)
    return out


def _values(config: Configuration, keys: list[str]) -> list[float] | None:
    """The configuration's mean of each objective over its completed seeds; None without one."""
    values = [config.mean(k) for k in keys]
    return None if any(v is None for v in values) else [float(v) for v in values]


def front(configs: list[Configuration], goals: dict[str, str]) -> list[Configuration]:
    """The configurations (runs that differ only by their seed, at their means) that no other
    beats on every objective (at least as good on each, better on one), best first on the first
    objective. Pruned and failed runs are no result."""
    keys, signs = list(goals), [1.0 if d == "minimize" else -1.0 for d in goals.values()]
    scored = [(c, [s * v for s, v in zip(signs, vals)]) for c in configs if (vals := _values(c, keys)) is not None]

    def dominated(a: list[float]) -> bool:
        return any(all(x <= y for x, y in zip(b, a)) and b != a for _, b in scored)

    return [c for c, v in sorted(scored, key=lambda cv: cv[1]) if not dominated(v)]


def _trials(config: Configuration) -> str:
    return ",".join(str(r.metrics.get("trial_number", r.label)) for r in config.runs)


def _swept(config: Configuration) -> list[str]:
    """The swept values as the summary shows them (floats rounded)."""
    from article_gpt.sweeps.records import display_value

    return [display_value(str(v)) for v in config.swept.values()]


def _label(config: Configuration, keys: set[str]) -> str:
    """The values of ``keys`` (those that differ along the front), one per line; the trial
    numbers where none differ."""
    lines = [f"{k}={v}" for k, v in zip(config.swept, _swept(config)) if k in keys]
    return "\n".join(lines) or f"trial {_trials(config)}"


def plot(path: Path, configs: list[Configuration], goals: dict[str, str], best: list[Configuration],
         title: str) -> None:
    """The first two objectives against each other: every configuration with a result, the front
    joined and each of its points labelled with its swept values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from article_gpt.tracking.report import plain_ticks

    (kx, dx), (ky, dy) = list(goals.items())[:2]
    points = [(v, c) for c in configs if (v := _values(c, [kx, ky]))]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    on_front = {id(r) for r in best}
    others = [v for v, r in points if id(r) not in on_front]
    if others:
        ax.plot(*zip(*others), "o", color="tab:gray", ms=5, alpha=0.6, label=f"dominated ({len(others)})")
    xy = sorted(_values(r, [kx, ky]) for r in best)
    if xy:
        ax.plot(*zip(*xy), "-o", color="tab:red", ms=6, lw=1.2, label=f"Pareto-optimal ({len(xy)})")
    differ = {k for k in (best[0].swept if best else {}) if len({r.swept.get(k) for r in best}) > 1}
    middle = (min(x for x, _ in xy) + max(x for x, _ in xy)) / 2 if xy else 0.0
    for r in best:
        x, y = _values(r, [kx, ky])
        right = x > middle  # labels point inwards, so none runs off the panel
        ax.annotate(_label(r, differ), (x, y), fontsize=6.5, xytext=(-6 if right else 6, 0),
                    textcoords="offset points", ha="right" if right else "left", va="center", linespacing=1.1)
    ax.margins(x=0.15, y=0.12)
    plain_ticks(fig)
    ax.set_xlabel(f"{kx} ({'lower' if dx == 'minimize' else 'higher'} is better)")
    ax.set_ylabel(f"{ky} ({'lower' if dy == 'minimize' else 'higher'} is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(runs: list[Run], sweep_dir: Path) -> list[str]:
    """For a multi-objective search (its ``best_trial.yaml`` names objectives): append the
    Pareto-optimal trials to summary.md, draw pareto.png, and return the lines for the console."""
    from article_gpt.sweeps.optuna_sweeper import BEST_FILE

    best_file = sweep_dir / BEST_FILE
    goals = dict(OmegaConf.load(best_file).get("objectives") or {}) if best_file.is_file() else {}
    if len(goals) < 2:
        return []
    configs = configurations(runs)
    best = front(configs, goals)
    keys = list(goals)
    head = ["trial", *(list(best[0].swept) if best else []), *keys, *(["n"] if seeded(configs) else [])]
    what = "configurations (the mean over their seeds)" if seeded(configs) else "trials"
    lines = ["## Pareto front", "", f"{len(best)} Pareto-optimal {what}: no other is at least as good on "
             "every objective (" + ", ".join(f"{k}: {d}" for k, d in goals.items()) + ").", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in best:
        lines.append("| " + " | ".join([_trials(c), *_swept(c), *(f"{v:.4g}" for v in _values(c, keys)),
                                        *([str(c.n())] if seeded(configs) else [])]) + " |")
    lines += ["", f"![{keys[1]} against {keys[0]}, the front in red]({PNG})", ""]
    with (sweep_dir / "summary.md").open("a", encoding="utf-8") as f:
        f.write("\n" + "\n".join(lines))
    plot(sweep_dir / PNG, configs, goals, best, f"Sweep {sweep_dir.name}: the trade-off front")
    return lines[:-2]
