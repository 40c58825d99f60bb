"""comparison.png: the val-loss curves of all runs on one axis, and best val loss per swept key.

Curves come from each run's record (``val_curve``: [step, loss] per validation), so
the picture is drawn from disk alone.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from article_gpt.runs.record import Status

if TYPE_CHECKING:
    from article_gpt.sweeps.records import Run

MAX_LEGEND_GROUPS = 6  # more lines than this in a per-key panel is a scatter, not a legend


def _as_numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _plot_curves(ax, runs: list[Run]) -> None:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(runs) <= 10 else "viridis")
    best = next((r for r in runs if r.val_loss is not None), None)
    for i, r in enumerate(runs):
        curve = r.metrics.get("val_curve") or []
        if not curve:
            continue
        color = cmap(i % 10) if len(runs) <= 10 else cmap(i / max(1, len(runs) - 1))
        failed = r.status != Status.COMPLETED
        label = r.short_name + (f" ({r.status})" if failed else "")
        steps, losses = zip(*curve)
        ax.plot(steps, losses, "--" if failed else "-", marker="o", ms=2.5, color=color, label=label,
                lw=2.4 if r is best else 1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title("val loss, every run (thick: best)", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2 if len(ax.lines) > 8 else 1)
    else:
        ax.text(0.5, 0.5, "no validation curves recorded", ha="center", va="center", transform=ax.transAxes)


def _plot_key(ax, runs: list[Run], key: str) -> None:
    """Best val loss against one swept key; one line per combination of the other swept keys."""
    xs_all = [r.swept[key] for r in runs]
    numeric = _as_numbers(xs_all)
    if numeric is None:  # categorical: one tick per value, in the order first seen
        order = {v: i for i, v in enumerate(dict.fromkeys(xs_all))}
        pos = {v: float(order[v]) for v in xs_all}
        ax.set_xticks(list(order.values()), list(order), fontsize=7)
    else:
        pos = dict(zip(xs_all, numeric))
        positive = [x for x in numeric if x > 0]
        if len(positive) == len(numeric) and max(positive) / min(positive) >= 10:
            ax.set_xscale("log")  # learning rates, weight decays: spread over decades
        if len(pos) <= 8:  # few values: tick exactly those, written as on the command line
            ax.set_xticks(list(pos.values()), list(pos), fontsize=7)
            ax.minorticks_off()
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in runs:
        if r.val_loss is not None:
            others = ",".join(f"{k}={v}" for k, v in r.swept.items() if k != key)
            groups[others].append((pos[r.swept[key]], r.val_loss))
        else:  # a run without a val loss: a red cross on the top edge at its value
            ax.plot(pos[r.swept[key]], 0.97, "x", color="tab:red", ms=7, transform=ax.get_xaxis_transform())
    for others, points in groups.items():
        points.sort()
        labelled = 1 < len(groups) <= MAX_LEGEND_GROUPS
        ax.plot(*zip(*points), "o-" if len(groups) <= MAX_LEGEND_GROUPS else "o", ms=4, lw=1,
                label=others if labelled else None)
    ax.set_xlabel(key, fontsize=8)
    ax.set_ylabel("best val loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
        ax.legend(fontsize=6)


def plot_history(path: Path, runs: list[Run], title: str) -> None:
    """An Optuna search's optimization history: each trial's best val loss against its number, and
    the best so far over completed trials (pruned trials stopped early: their loss is not a result)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = sorted((r for r in runs if isinstance(r.metrics.get("trial_number"), int)),
                    key=lambda r: r.metrics["trial_number"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
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
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compute_differs(runs: list[Run]) -> bool:
    """True when the runs trained on different amounts of compute (no equal budget): then best
    val loss against training FLOPs shows what each extra FLOP bought."""
    flops = {r.metrics.get("train_flops") for r in runs if r.val_loss is not None and r.metrics.get("train_flops")}
    return len(flops) > 1


def _plot_flops(ax, runs: list[Run]) -> None:
    """Best val loss against training FLOPs (tokens seen x the model's FLOPs per token), one point a run."""
    points = [(r.metrics["train_flops"], r.val_loss, r.label) for r in runs  # label: the job, as in the table
              if r.val_loss is not None and r.metrics.get("train_flops")]
    xs = [x for x, _, _ in points]
    ax.plot(xs, [y for _, y, _ in points], "o", ms=4, color="tab:purple")
    if len(points) <= MAX_LEGEND_GROUPS * 2:
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel("training FLOPs", fontsize=8)
    ax.set_ylabel("best val loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def plot_comparison(path: Path, runs: list[Run], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(runs[0].swept) if runs else []
    flops_panel = bool(keys) and compute_differs(runs)
    rows = max(1, len(keys) + flops_panel)
    fig = plt.figure(figsize=(11 if keys else 7.5, max(4.5, 2.6 * rows)))
    grid = fig.add_gridspec(rows, 2 if keys else 1, width_ratios=[2, 1] if keys else [1])
    _plot_curves(fig.add_subplot(grid[:, 0]), runs)
    for i, key in enumerate(keys):
        _plot_key(fig.add_subplot(grid[i, 1]), runs, key)
    if flops_panel:
        _plot_flops(fig.add_subplot(grid[len(keys), 1]), runs)
    failed = sum(not r.ok for r in runs)
    fig.suptitle(title + (f"  ({failed} of {len(runs)} did not complete: red x)" if failed and keys else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

