"""comparison.png and history.png: a sweep's pictures, drawn from its records alone.

comparison.png: the val-loss curves of every run on one axis (against tokens seen where the jobs
saw different amounts per step, training FLOPs where only their FLOPs per step differ, else
step), and best val loss against each swept key. Runs that differ only by ``seed`` are one
configuration (article_gpt/sweeps/seeds.py): one colour in the curves, one point in the panels
(the mean over seeds, its std as an error bar). Every point is named by its swept values, a key
on a log scale (records.key_scales: a learning rate) is drawn on a log axis, no axis carries an
offset, and legends sit outside the data.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from article_gpt.runs.record import Status
from article_gpt.sweeps import seeds
from article_gpt.sweeps.records import CATEGORICAL, LOG, LOG_SPAN, display_value, key_scales, swept_label
from article_gpt.tracking.report import fitted_title, plain_ticks

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from article_gpt.sweeps.records import Run
    from article_gpt.sweeps.seeds import Configuration

MAX_LEGEND_GROUPS = 6  # more lines than this in a per-key panel is a scatter, not a legend
MAX_VALUE_TICKS = 8  # up to this many values: tick exactly those; more (a search): round ticks
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}  # right of the axes


def curve_axis(runs: list[Run]) -> tuple[str, dict[int, float]]:
    """What the curves are drawn against, and each run's amount of it per step (by ``id(run)``):
    tokens seen where the runs' tokens per step differ, training FLOPs where only their FLOPs per
    step differ, else the step itself."""
    for key, label in (("tokens_seen", "tokens seen"), ("train_flops", "training FLOPs")):
        per_step = {id(r): r.metrics[key] / r.metrics["steps"] for r in runs
                    if r.metrics.get(key) and r.metrics.get("steps")}
        if len(per_step) == len(runs) and len({round(v, 6) for v in per_step.values()}) > 1:
            return label, per_step
    return "step", {id(r): 1.0 for r in runs}


def _legend(ax: Axes, **where) -> None:
    if ax.get_legend_handles_labels()[0]:  # lines and error bars that carry a label
        ax.legend(fontsize=6, **(where or OUTSIDE))


def _plot_curves(ax: Axes, runs: list[Run], configs: list[Configuration]) -> None:
    from matplotlib import colormaps
    from matplotlib.ticker import EngFormatter

    cmap = colormaps["tab10" if len(configs) <= 10 else "viridis"]
    xlabel, per_step = curve_axis(runs)
    best = configs[0] if configs and configs[0].mean() is not None else None
    for i, c in enumerate(configs):
        color = cmap(i % 10) if len(configs) <= 10 else cmap(i / max(1, len(configs) - 1))
        labelled = False
        for r in c.runs:
            curve = r.metrics.get("val_curve") or []
            if not curve:
                continue
            failed = r.status != Status.COMPLETED
            label = None
            if failed:
                label = f"{swept_label(r.swept)} ({r.status})"
            elif not labelled:
                label, labelled = c.name + (f" ({c.n()} seeds)" if len(c.runs) > 1 else ""), True
            ax.plot([s * per_step[id(r)] for s, _ in curve], [v for _, v in curve], "--" if failed else "-",
                    marker="o", ms=2.5, color=color, label=label, lw=2.4 if c is best else 1.2)
    ax.set_xlabel(xlabel)
    if xlabel != "step":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title("val loss, every run (thick: best" + (", one colour per configuration)" if
                                                       seeds.seeded(configs) else ")"), fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        _legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2 if len(ax.lines) > 6 else 1)
    else:
        ax.text(0.5, 0.5, "no validation curves recorded", ha="center", va="center", transform=ax.transAxes)


def value_axis(ax: Axes, values: list[str], scale: str) -> dict[str, float]:
    """Set up the x axis for a swept key's values on its scale; each value's position on it."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    distinct = list(dict.fromkeys(values))
    if scale == CATEGORICAL:  # one tick per value, in the order first seen
        ax.set_xticks(range(len(distinct)), [display_value(v) for v in distinct])
        return {v: float(i) for i, v in enumerate(distinct)}
    distinct.sort(key=float)
    pos = {v: float(v) for v in distinct}
    if scale == LOG:
        ax.set_xscale("log")  # learning rates, weight decays: spread over decades
    if len(distinct) <= MAX_VALUE_TICKS:  # a grid: tick exactly its values, rounded for reading
        ax.set_xticks(list(pos.values()), [display_value(v) for v in distinct])
        ax.xaxis.set_minor_locator(NullLocator())
    elif scale == LOG:  # a search's many values: 1-2-5 ticks, rounded
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    return pos


def _plot_key(ax: Axes, configs: list[Configuration], key: str, scale: str) -> None:
    """Best val loss (mean over seeds, std as error bar) against one swept key; one line per
    combination of the other swept keys."""
    pos = value_axis(ax, [c.swept[key] for c in configs], scale)
    groups: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for c in configs:
        if c.mean() is not None:
            others = swept_label({k: v for k, v in c.swept.items() if k != key})
            groups[others].append((pos[c.swept[key]], c.mean(), c.std() or 0.0))
        else:  # a configuration without a val loss: a red cross on the top edge at its value
            ax.plot(pos[c.swept[key]], 0.97, "x", color="tab:red", ms=7, transform=ax.get_xaxis_transform())
    lines = len(groups) <= MAX_LEGEND_GROUPS
    for others, points in groups.items():
        points.sort()
        xs, ys, errs = zip(*points)
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, fmt="o-" if lines else "o", ms=4, lw=1, capsize=2,
                    label=others if lines and len(groups) > 1 else None,
                    color=None if lines else "tab:blue")  # a scatter: one colour, no legend
    ax.set_xlabel(key, fontsize=8)
    ax.set_ylabel("best val loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    _legend(ax)


def plot_history(path: Path, runs: list[Run], title: str) -> None:
    """history.png: :func:`history_figure`, saved."""
    history_figure(runs, title).savefig(path, dpi=110)


def history_figure(runs: list[Run], title: str) -> Figure:
    """An Optuna search's optimization history: each trial's best val loss against its number, and
    the best so far over completed trials (pruned trials stopped early: their loss is not a result)."""
    from matplotlib.figure import Figure

    trials = sorted((r for r in runs if isinstance(r.metrics.get("trial_number"), int)),
                    key=lambda r: r.metrics["trial_number"])
    fig = Figure(figsize=(8.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for status, style, color in ((Status.COMPLETED, "o", "tab:blue"), (Status.PRUNED, "v", "tab:gray")):
        pts = [(r.metrics["trial_number"], r.val_loss) for r in trials if r.status == status and r.val_loss is not None]
        if pts:
            ax.plot(*zip(*pts), style, ms=5, color=color, label=f"{status} ({len(pts)})")
    failed = [r.metrics["trial_number"] for r in trials if not r.ok]
    if failed:  # no loss to show: a red x on the top edge
        ax.plot(failed, [0.97] * len(failed), "x", color="tab:red", ms=7, label=f"failed ({len(failed)})",
                transform=ax.get_xaxis_transform())
    best, xs, ys = None, [], []
    for r in trials:
        if r.status == Status.COMPLETED and r.val_loss is not None:
            best = r.val_loss if best is None else min(best, r.val_loss)
        if best is not None:
            xs.append(r.metrics["trial_number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", lw=1.5, label="best so far")
    ax.xaxis.get_major_locator().set_params(integer=True)  # trial numbers
    ax.set_xlabel("trial")
    ax.set_ylabel("best val loss (nats/token)")
    ax.set_title(fitted_title(title, fig), fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, **OUTSIDE)
    plain_ticks(fig)
    return fig


def compute_differs(runs: list[Run]) -> bool:
    """True when the runs trained on different amounts of compute (no equal budget): then best
    val loss against training FLOPs shows what each extra FLOP bought."""
    flops = {r.metrics.get("train_flops") for r in runs if r.val_loss is not None and r.metrics.get("train_flops")}
    return len(flops) > 1


def _plot_flops(ax: Axes, configs: list[Configuration]) -> None:
    """Best val loss against training FLOPs (tokens seen x the model's FLOPs per token), one point a
    configuration, named by its swept values."""
    from matplotlib.ticker import EngFormatter

    points = [(c.mean("train_flops"), c.mean(), c.std() or 0.0, c.name) for c in configs
              if c.mean() is not None and c.mean("train_flops")]
    xs = [x for x, *_ in points]
    if not points:  # compute differed only among runs without a completed result
        return
    ax.errorbar(xs, [y for _, y, _, _ in points], yerr=[e for _, _, e, _ in points], fmt="o", ms=4,
                color="tab:purple", capsize=2)
    if len(points) <= MAX_LEGEND_GROUPS:  # more names than this overlap
        middle = (min(xs) * max(xs)) ** 0.5 if min(xs) > 0 else (min(xs) + max(xs)) / 2
        for x, y, _, name in points:  # the text towards the middle, so it stays inside the panel
            right = x > middle
            ax.annotate(name, (x, y), fontsize=6, xytext=(-3 if right else 3, 3), textcoords="offset points",
                        ha="right" if right else "left")
    if max(xs) / min(xs) >= LOG_SPAN:  # the swept keys' rule (records.key_scales)
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("training FLOPs", fontsize=8)
    ax.set_ylabel("best val loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def comparison_figure(runs: list[Run], title: str) -> Figure:
    """comparison.png's figure, before it is saved (tests read its axes)."""
    from matplotlib.figure import Figure

    configs = seeds.configurations(runs)
    scales = key_scales(runs)
    keys = [k for k in scales if k != seeds.SEED]  # seeds are averaged, never an axis
    flops_panel = bool(keys) and compute_differs(runs)
    rows = max(1, len(keys) + flops_panel)
    fig = Figure(figsize=(14 if keys else 8, max(5.5, 2.8 * rows)), layout="constrained")
    grid = fig.add_gridspec(rows, 2 if keys else 1, width_ratios=[1.6, 1] if keys else [1])
    _plot_curves(fig.add_subplot(grid[:, 0]), runs, configs)
    for i, key in enumerate(keys):
        _plot_key(fig.add_subplot(grid[i, 1]), configs, key, scales[key])
    if flops_panel:
        _plot_flops(fig.add_subplot(grid[len(keys), 1]), configs)
    failed = sum(not r.ok for r in runs)
    fig.suptitle(fitted_title(title + (f"  ({failed} of {len(runs)} did not complete: red x)" if failed and keys
                                       else ""), fig, 10), fontsize=10)
    plain_ticks(fig)
    return fig


def plot_comparison(path: Path, runs: list[Run], title: str) -> None:
    """comparison.png: :func:`comparison_figure`, saved."""
    comparison_figure(runs, title).savefig(path, dpi=110)
