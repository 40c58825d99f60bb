"""What a run ends with: the console lines read off its record, and loss.png; and the rules every
picture of runs keeps (the sweep pictures in article_gpt/sweeps/plot.py too).

Nothing called from the closing path may raise: it runs after training succeeded or failed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from article_gpt.errors import describe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from article_gpt.tracking.recorder import RunRecorder

TITLE_CHARS_PER_INCH = 11  # characters of a 9-pt title that fit in an inch of figure width


def plain_ticks(fig: Figure) -> None:
    """Tick labels read as plain numbers on every axis: no offset or multiplier above the axis
    (matplotlib's ``+1.022e1``), which a reader misses. Axes with their own formatter keep it."""
    from matplotlib.ticker import ScalarFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            if isinstance(fmt, ScalarFormatter):
                fmt.set_useOffset(False)
                fmt.set_scientific(False)


def fitted_title(title: str, fig: Figure, fontsize: float = 9) -> str:
    """``title`` on lines that fit the figure's width (a long run name stays inside), broken after
    a space or a comma (``seed=2,lr=0.001`` breaks between its keys)."""
    width = max(10, int(fig.get_figwidth() * TITLE_CHARS_PER_INCH * 9 / fontsize))
    lines, line = [], ""
    for piece in re.split(r"(?<=[ ,])", title):
        for chunk in [piece[i:i + width] for i in range(0, len(piece), width)] or [""]:
            if line and len(line) + len(chunk.rstrip()) > width:
                lines.append(line.rstrip())
                line = ""
            line += chunk
    return "\n".join([*lines, line.rstrip()]).strip()


def loss_figure(recorder: RunRecorder, title: str) -> Figure:
    """Train and val loss against step: the original Article GPT's loss picture."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if recorder.train_curve:
        ax.plot(*zip(*recorder.train_curve), label="train/loss", lw=1.2)
    if recorder.val_curve:
        ax.plot(*zip(*recorder.val_curve), "o-", label="val/loss", lw=1.5, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(fitted_title(title, fig), fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="best")
    plain_ticks(fig)
    return fig


def plot_losses(path: Path, recorder: RunRecorder, title: str) -> None:
    """loss.png: :func:`loss_figure`, saved."""
    loss_figure(recorder, title).savefig(path, dpi=110)


def report(metrics: dict, module) -> None:
    """The end-of-run console lines: run dir, status, best val loss, throughput, the last sample;
    train.log gets them too, with an offline W&B run's ``wandb sync`` command."""
    try:
        _report(metrics, module)
    except Exception as err:  # the console lines are a courtesy: never the reason a run fails
        print(f"note: the end-of-run report failed ({describe(err)}); see {metrics.get('run_dir')}/metrics.json")


def _report(metrics: dict, module) -> None:
    from article_gpt.tracking.console import to_run_log

    lines: list[str] = []

    def say(line: str) -> None:  # printed at once, as each line always was
        print(("\n" if not lines else "") + line)
        lines.append(line)

    best = metrics["val_loss"]
    say(f"run dir:       {metrics['run_dir']}")
    say(f"status:        {metrics['status']}" + (f" ({metrics['error']})" if metrics["error"] else ""))
    if best is not None:
        first = metrics["val_loss_initial"]
        ppl = f"{metrics['val_ppl']:.1f}" if metrics.get("val_ppl") is not None else "inf"  # a diverged run
        say(f"best val loss: {best:.4f} (ppl {ppl})" + (f", from {first:.4f}" if first else ""))
    if metrics.get("tokens_per_sec"):
        say(f"throughput:    {metrics['tokens_per_sec']:.0f} tokens/s over {metrics['steps']} steps")
    if metrics.get("tokens_seen"):
        planned = f" (budget: {metrics['budget_steps']} steps)" if metrics.get("budget_steps") else ""
        say(f"compute:       {metrics['tokens_seen']:,} tokens, {metrics['train_flops']:.3g} FLOPs{planned}")
    if module is not None and module.samples:
        say(f"sample:        {module.samples[-1]['text']!r}")
    if metrics.get("wandb_mode") == "offline" and metrics.get("wandb_dir"):  # the console had it as the run began
        wandb_dir = metrics["wandb_dir"]
        lines.append(f"W&B: offline run in {wandb_dir}; upload it with: wandb sync {wandb_dir}")
    to_run_log(lines)  # train.log keeps the lines one looks for later (article_gpt/tracking/console.py)
