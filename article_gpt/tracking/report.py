"""The console lines a run ends with, read off its record.

Nothing here may raise: it runs in the run's closing path, after training succeeded or failed.
"""

from __future__ import annotations

from article_gpt.errors import describe


def report(metrics: dict, module) -> None:
    """The end-of-run console lines: run dir, status, best val loss, throughput, the last sample."""
    try:
        _report(metrics, module)
    except Exception as err:  # the console lines are a courtesy: never the reason a run fails
        print(f"note: the end-of-run report failed ({describe(err)}); see {metrics.get('run_dir')}/metrics.json")


def _report(metrics: dict, module) -> None:
    best = metrics["val_loss"]
    print(f"\nrun dir:       {metrics['run_dir']}")
    print(f"status:        {metrics['status']}" + (f" ({metrics['error']})" if metrics["error"] else ""))
    if best is not None:
        first = metrics["val_loss_initial"]
        ppl = f"{metrics['val_ppl']:.1f}" if metrics.get("val_ppl") is not None else "inf"  # a diverged run
        print(f"best val loss: {best:.4f} (ppl {ppl})" + (f", from {first:.4f}" if first else ""))
    if metrics.get("tokens_per_sec"):
        print(f"throughput:    {metrics['tokens_per_sec']:.0f} tokens/s over {metrics['steps']} steps")
    if metrics.get("tokens_seen"):
        planned = f" (budget: {metrics['budget_steps']} steps)" if metrics.get("budget_steps") else ""
        print(f"compute:       {metrics['tokens_seen']:,} tokens, {metrics['train_flops']:.3g} FLOPs{planned}")
    if module is not None and module.samples:
        print(f"sample:        {module.samples[-1]['text']!r}")
