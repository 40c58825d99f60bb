"""The console lines a run ends with, read off its record.

Nothing here may raise: it runs in the run's closing path, after training succeeded or failed.
"""

from __future__ import annotations

from article_gpt.errors import describe


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
