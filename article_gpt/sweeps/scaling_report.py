"""scaling.json, scaling.md and scaling.png: the scaling fits of a set of runs (sweeps/scaling.py).

Written at the end of a sweep of several sizes and budgets (sweeps/callbacks.py) and by
``scripts/compare_runs.py`` over any runs of different sizes and compute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from article_gpt.config.rules import TRAIN_RULES, check_rules
from article_gpt.errors import ArticleGPTError, describe
from article_gpt.sweeps import scaling
from article_gpt.sweeps.records import Run, si
from article_gpt.tracking.report import fitted_title, plain_ticks

FILES = ("scaling.json", "scaling.md", "scaling.png")


def settings(scaling_cfg=None) -> dict:
    """``predict_flops`` and ``params`` from a ``scaling`` block (conf/train.yaml's, or compare_runs'
    flags), checked by the training config's own rules; keys left out take scaling.fit's defaults."""
    given = {k: v for k, v in dict(scaling_cfg or {}).items() if v is not None or k == "predict_flops"}
    cfg = OmegaConf.create({"scaling": {"params": "non_embedding", **given}})
    check_rules(cfg, {k: rule for k, rule in TRAIN_RULES.items() if k.startswith("scaling.")})
    return {"params": cfg.scaling.params, "predict_flops": cfg.scaling.get("predict_flops")}


def to_json(fit: scaling.Scaling) -> dict:
    law, pred = fit.parametric, fit.prediction
    return {
        "params": fit.params,
        **{k: (getattr(law, k) if law else None) for k in ("E", "A", "B", "alpha", "beta")},
        "a": fit.exponent[0] if fit.exponent else None,  # N_opt ∝ C^a over the budgets
        "budgets": [{"flops": b.flops, "n_opt": b.n_opt, "loss_opt": b.loss_opt, "bracketed": b.bracketed,
                     "runs": len(b.points)} for b in fit.budgets],
        "prediction": None if pred is None else {
            "flops": pred.flops, "n": pred.n, "tokens": pred.d, "loss": pred.loss, "extrapolated": pred.extrapolated,
            "at_search_edge": pred.at_edge,
            "tokens_from": "flops / flops_per_token(N), flops_per_token(N) fitted through the runs (not 6N)"},
        "flops_per_token_law": None if fit.flops_per_token is None else {
            "exponent": fit.flops_per_token[0], "coefficient": fit.flops_per_token[1]},
        "points": [{"label": p.label, "n": p.n, "tokens": p.d, "flops": p.c, "loss": p.loss, "budget": p.budget,
                    "seeds": p.seeds, "epochs": p.epochs} for p in fit.points],
    }


def _budget_lines(fit: scaling.Scaling) -> list[str]:
    lines = ["## Compute-optimal size per budget (approach 2)", "",
             "A parabola in ln N through each budget's runs; its vertex is the budget's best size.", "",
             "| budget (FLOPs) | runs | N_opt | loss at N_opt | vertex | best run trained |",
             "|---|---|---|---|---|---|"]
    for b in fit.budgets:
        best = min(b.points, key=lambda p: p.loss)
        where = ("-" if b.n_opt is None else "within the sizes" if b.bracketed
                 else "outside the sizes: extrapolated")
        if b.coef is None:
            where = f"fewer than {scaling.MIN_PARABOLA} sizes"
        elif b.n_opt is None:
            where = "no minimum (the parabola opens downward)"
        lines.append(f"| {si(b.flops)} | {len(b.points)} | {si(b.n_opt)} | {_fmt(b.loss_opt)} | {where} | "
                     f"{best.label} ({best.loss:.4f}) |")
    if fit.exponent:
        lines += ["", f"Across budgets: **N_opt ∝ C^{fit.exponent[0]:.2f}** (Hoffmann et al. found about 0.5, "
                  "Kaplan et al. 0.73, on corpora of billions of tokens)."]
    else:
        lines += ["", "No power law N_opt ∝ C^a: fewer than two budgets have a parabola with a minimum."]
    return lines


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def _law_lines(fit: scaling.Scaling) -> list[str]:
    law = fit.parametric
    lines = ["", "## L(N, D) = E + A/N^α + B/D^β (approach 3)", ""]
    if law is None:
        return lines + [f"Not fitted: it needs {scaling.MIN_PARAMETRIC} configurations, "
                        f"these runs have {len(fit.points)}."]
    lines += [f"E = {law.E:.3f}, A = {law.A:.4g}, B = {law.B:.4g}, **α = {law.alpha:.3f}, β = {law.beta:.3f}** "
              f"(Huber loss of log L's residuals {law.huber:.3g}, best of {law.starts} starts). "
              f"Under C ∝ N·D this puts N_opt ∝ C^{law.beta / (law.alpha + law.beta):.2f}."
              if law.alpha + law.beta > 0 else "α = β = 0: no dependence on N or D found."]
    pred, fpt = fit.prediction, fit.flops_per_token
    if fpt:
        lines += ["", f"FLOPs per token through these runs: {fpt[1]:.4g} · N^{fpt[0]:.3f} (the output head "
                  "included; 6N alone would leave it out)."]
    if pred:
        lines += ["", f"**Prediction for {si(pred.flops)} FLOPs**: N = {si(pred.n)}, D = {si(pred.d)} tokens, "
                  f"loss {pred.loss:.3f}" + (" (outside the sizes trained: an extrapolation)" if pred.extrapolated
                                             else "") +
                  ". D = C / flops_per_token(N) with the FLOPs-per-token law above, not C = 6ND."]
        if pred.at_edge:
            lines.append(f"That N is an end of the search ({scaling.SEARCH}x beyond the sizes trained): the fit "
                         "has no optimum there, read it as \"outside the sizes trained\", not as a size.")
        if fit.exponent:
            lines.append(f"Approach 2's power law says N_opt = {si(fit.exponent[1] * pred.flops ** fit.exponent[0])}.")
    return lines


def _notes(fit: scaling.Scaling) -> list[str]:
    widest = max(fit.points, key=lambda p: p.params_total)
    share = 1 - widest.params_non_embedding / widest.params_total
    what = "non-embedding parameters" if fit.params == "non_embedding" else "all parameters, the embedding included"
    return ["", "## What the numbers are", "",
            f"N = {what} (`scaling.params={fit.params}`), D = tokens seen, C = training FLOPs, L = best val loss, "
            "from each run's metrics.json; runs that differ only by their seed are one point, their mean.",
            f"The token and position tables are most of these small models: {share:.0%} of the parameters of "
            f"{widest.label} ({si(widest.params_total)} in all, {si(widest.params_non_embedding)} outside them).",
            f"D counts repeated text: the runs saw their training split up to {max(p.epochs for p in fit.points):.1f} "
            "times. On a corpus of a few thousand words the fit describes this corpus at these sizes; "
            "it is no law for larger models or other text."]


def markdown(fit: scaling.Scaling, title: str) -> str:
    rows = ["| run | budget | N | D | C | best val loss | seeds |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {p.label} | {si(p.budget)} | {si(p.n)} | {si(p.d)} | {si(p.c)} | {p.loss:.4f} | {p.seeds} |"
             for p in sorted(fit.points, key=lambda p: (p.budget or p.c, p.n))]
    return "\n".join([f"# {title}: scaling", "", *_budget_lines(fit), *_law_lines(fit), *_notes(fit),
                      "", "## Runs", "", *rows, "", "![isoFLOP curves and N_opt against C](scaling.png)", ""])


def write(runs: list[Run], out_dir: Path, title: str, scaling_cfg=None) -> bool:
    """Write the three files when the runs have different sizes and compute; say whether they were."""
    opts = settings(scaling_cfg)
    pts = scaling.points(runs, opts["params"])
    if not scaling.sized(pts):
        return False
    fit = scaling.fit(pts, opts["params"], opts["predict_flops"])
    json_file, md_file, png_file = (out_dir / name for name in FILES)
    json_file.write_text(json.dumps(to_json(fit), indent=2) + "\n", encoding="utf-8")
    md_file.write_text(markdown(fit, title), encoding="utf-8")
    plot(png_file, fit, title)
    return True


def _ticks(ax, axis: str) -> None:
    """Plain tick labels on a log axis (12K, 1M, 100G), at 1, 2 and 5 of each decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
    target.set_minor_formatter(NullFormatter())


def _isoflop_panel(ax, fit: scaling.Scaling, colors) -> None:
    import numpy as np

    names = [k.split("=")[0] for k in fit.points[0].label.split(",")] if fit.points[0].label else []
    for b, color in zip(fit.budgets, colors):
        ns, losses = [p.n for p in b.points], [p.loss for p in b.points]
        ax.plot(ns, losses, "o", color=color, ms=5, label=f"{si(b.flops)} FLOPs")
        for p in b.points:  # the size, as its swept values: 64×2 for embedding_dim=64,num_layers=2
            ax.annotate("×".join(kv.split("=")[-1] for kv in p.label.split(",")), (p.n, p.loss), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=color)
        grid = np.geomspace(min(ns), max(ns), 60)
        if b.coef is not None:
            ax.plot(grid, np.polyval(b.coef, np.log(grid)), "-", color=color, lw=1)
        if b.n_opt is not None and b.bracketed:
            ax.plot(b.n_opt, b.loss_opt, "*", color=color, ms=11, mec="black", mew=0.5)
        if fit.parametric is not None and fit.flops_per_token is not None:
            exponent, coef = fit.flops_per_token
            ax.plot(grid, fit.parametric.loss(grid, b.flops / (coef * grid ** exponent)), ":", color=color, lw=1)
    ax.set_xscale("log")
    _ticks(ax, "x")
    ax.set_xlabel(f"N ({fit.params.replace('_', '-')} parameters)" + (f"; points: {'×'.join(names)}" if names else ""),
                  fontsize=8)
    ax.set_ylabel("best val loss (nats/token)", fontsize=8)
    ax.set_title("isoFLOP curves: parabola (solid), vertex (star), L(N, D) fit (dotted)", fontsize=8)


def _optimum_panel(ax, fit: scaling.Scaling, colors) -> None:
    import numpy as np

    found = [(b, c) for b, c in zip(fit.budgets, colors) if b.n_opt is not None]
    for b, color in found:
        ax.plot(b.flops, b.n_opt, "*", ms=11, color=color if b.bracketed else "none", mec=color if not b.bracketed
                else "black", mew=0.8, label=None)
    cs = [b.flops for b, _ in found] + ([fit.prediction.flops] if fit.prediction else [])
    if fit.exponent and cs:
        grid = np.geomspace(min(cs), max(cs), 30)
        ax.plot(grid, fit.exponent[1] * grid ** fit.exponent[0], "-", color="black", lw=1,
                label=f"approach 2: N_opt ∝ C^{fit.exponent[0]:.2f}")
    if fit.prediction:
        p = fit.prediction
        ax.plot(p.flops, p.n, "D", color="tab:red", ms=6, label=f"L(N, D) fit at {si(p.flops)}: N={si(p.n)}")
    missing = [si(b.flops) for b in fit.budgets if b.n_opt is None]
    if missing:
        ax.text(0.03, 0.97, f"no minimum at {', '.join(missing)} FLOPs", transform=ax.transAxes, fontsize=7,
                va="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    every = [b.flops for b in fit.budgets] + cs
    if every:
        ax.set_xlim(min(every) / 1.5, max(every) * 1.5)
    _ticks(ax, "x")
    _ticks(ax, "y")
    ax.set_xlabel("training FLOPs C", fontsize=8)
    ax.set_ylabel("N_opt", fontsize=8)
    ax.set_title("best size per budget (hollow: outside the sizes trained)", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)


def plot(path: Path, fit: scaling.Scaling, title: str) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    colors = [colormaps["viridis"](i / max(1, len(fit.budgets) - 1) * 0.85) for i in range(len(fit.budgets))]
    _isoflop_panel(left, fit, colors)
    _optimum_panel(right, fit, colors)
    if left.get_legend_handles_labels()[0]:  # below the axes: never over a point
        left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(4, len(fit.budgets)),
                    frameon=False, title="budget", title_fontsize=7)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(fitted_title(title, fig, 10), fontsize=10)  # the rules of every picture (tracking/report.py)
    plain_ticks(fig)
    fig.savefig(path, dpi=110)


def sweep_line(runs: list[Run], out_dir: Path, title: str, scaling_cfg=None) -> str | None:
    """For the end of a sweep: write the files, and the console line that says so or why not;
    None for a sweep of one size or one budget. Never raises: the sweep's summary is written."""
    try:
        if not write(runs, out_dir, title, scaling_cfg):
            return None
    except ArticleGPTError as err:
        return f"scaling: not written: {err}"
    except Exception as err:  # a fit that fails must not cost the sweep its exit status
        return f"scaling: not written ({describe(err)}); retry with: python scripts/compare_runs.py {out_dir}"
    return f"scaling: {out_dir / 'scaling.md'} (+ scaling.json, scaling.png)"
