"""Scaling laws of a sweep: the compute-optimal model size for this corpus, from runs of several
sizes at several training-FLOPs budgets (``experiment=isoflop``), after Hoffmann et al. 2022
("Chinchilla"), two of its three approaches:

- **approach 2**, per budget: a parabola in log N through that budget's (log N, loss); its vertex
  is the budget's loss-minimizing size ``n_opt`` and its ``loss_opt``. Across budgets, a
  least-squares line through (log C, log n_opt) gives the power law N_opt ∝ C^a.
- **approach 3**: L(N, D) = E + A/N^alpha + B/D^beta fitted over every run, as the paper does:
  A, B, E as exp(a), exp(b), exp(e), so log L = LSE(a - alpha log N, b - beta log D, e); the
  Huber loss (delta 1e-3) of log L's residuals; minimized from a grid of starts, the best kept.

The numbers come from each run's record (runs/record.py): N = ``params_non_embedding``
(``scaling.params=total``: ``params_total``), D = ``tokens_seen``, C = ``train_flops`` (tokens x
the model's own ``flops_per_token``: 6 x its matmul weights, the output head included, plus
attention), L = best val loss. Runs that differ only by their seed are one configuration
(sweeps/seeds.py), with their means.

A prediction for C FLOPs (``scaling.predict_flops``) does not take C = 6ND: with a 50k-token
vocabulary the output head is most of these small models' compute and is no part of the
non-embedding N. It takes D = C / flops_per_token(N), flops_per_token(N) a power law fitted
through the runs, and the N that minimizes the fitted L(N, D(N)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from article_gpt.errors import ArticleGPTError
from article_gpt.sweeps.records import Run, configured_value
from article_gpt.sweeps.seeds import Configuration, configurations

BUDGET_KEY = "budget.flops"
HUBER_DELTA = 1e-3  # Hoffmann et al.'s
MIN_PARABOLA = 3  # sizes a budget needs for its parabola
MIN_PARAMETRIC = 5  # configurations for E, A, B, alpha, beta
SEARCH = 100  # a prediction's N is searched within this factor of the sizes trained
STARTS = 12  # minimizations for approach 3, from the best points of its grid of starts
# SLSQP, not the paper's L-BFGS(-B): the same optima here, but scipy's L-BFGS-B calls BLAS at each
# iteration, 10 ms a call where BLAS threads compete for 2 busy cores. Tight tolerances: the Huber
# loss is flat (1e-3 wide) and the default ones stop short of the optimum.
OPTIONS = {"ftol": 1e-15, "maxiter": 5000}


class ScalingError(ArticleGPTError):
    """The scaling fit cannot be made (its extra is not installed)."""


def _scipy_optimize():
    try:
        from scipy import optimize
    except ImportError:
        raise ScalingError('the scaling fit needs scipy: pip install -e ".[analysis]"') from None
    return optimize


@dataclass(frozen=True)
class Point:
    """One configuration: its seeds' means."""

    label: str  # its swept values without the budget and the seed, e.g. embedding_dim=64,num_layers=2
    n: float  # parameters: non-embedding or total (scaling.params)
    d: float  # tokens seen
    c: float  # training FLOPs
    loss: float  # best val loss
    flops_per_token: float
    params_total: float
    params_non_embedding: float
    epochs: float  # tokens seen over the training split's tokens: how often it saw the corpus
    budget: float | None  # its budget.flops; None for a run without one
    seeds: int


def _budget(run: Run) -> float | None:
    value = run.overrides.get(BUDGET_KEY) or configured_value(run.run_dir, BUDGET_KEY)
    try:
        return float(value)
    except ValueError:  # "-": no budget, "null" typed on the command line
        return None


def _label(conf: Configuration) -> str:
    """The configuration's swept values without those of budget.* keys (its short keys' full forms)."""
    full = list(conf.runs[0].overrides)
    budget = {k for k in conf.swept
              if any(f.startswith("budget.") and (f == k or f.endswith("." + k)) for f in full)}
    return ",".join(f"{k}={v}" for k, v in conf.swept.items() if k not in budget)


def points(runs: list[Run], params: str = "non_embedding") -> list[Point]:
    """The configurations with every number the fits need (completed runs only); ``params`` is one
    of config.rules.SCALING_PARAMS (checked where the settings come in: scaling_report.settings)."""
    found = []
    for conf in configurations(runs):
        means = [conf.mean(k) for k in ("val_loss", f"params_{params}", "tokens_seen", "train_flops",
                                        "flops_per_token", "params_total", "params_non_embedding", "train_tokens")]
        if any(m is None or m <= 0 for m in means):
            continue
        loss, n, d, c, fpt, total, non_embedding, corpus = means
        found.append(Point(_label(conf), n, d, c, loss, fpt, total, non_embedding, d / corpus,
                           _budget(conf.runs[0]), conf.n()))
    return found


def sized(pts: list[Point]) -> bool:
    """Runs of different sizes and different compute, enough of them for one of the fits: a
    sweep of two or three jobs gets no scaling files that fit nothing."""
    if len({p.n for p in pts}) < 2 or len({f"{p.budget or p.c:.2g}" for p in pts}) < 2:
        return False
    budgets = {p.budget for p in pts if p.budget is not None}
    return len(pts) >= MIN_PARAMETRIC or any(len({p.n for p in pts if p.budget == b}) >= MIN_PARABOLA
                                             for b in budgets)


@dataclass
class BudgetFit:
    """Approach 2 at one budget."""

    flops: float
    points: list[Point]
    n_opt: float | None = None  # the parabola's vertex; None where it has no minimum
    loss_opt: float | None = None
    coef: tuple[float, float, float] | None = None  # loss = c0 x^2 + c1 x + c2, x = ln N
    bracketed: bool = False  # the vertex lies within the sizes trained (not extrapolated)


def fit_budget(flops: float, pts: list[Point]) -> BudgetFit:
    fit = BudgetFit(flops, sorted(pts, key=lambda p: p.n))
    if len({p.n for p in pts}) < MIN_PARABOLA:
        return fit
    x, y = np.log([p.n for p in fit.points]), np.array([p.loss for p in fit.points])
    c0, c1, c2 = np.polyfit(x, y, 2)
    fit.coef = (float(c0), float(c1), float(c2))
    if c0 > 0:  # a minimum
        vertex = -c1 / (2 * c0)
        fit.n_opt, fit.loss_opt = math.exp(vertex), float(c2 - c1 * c1 / (4 * c0))
        fit.bracketed = bool(x.min() <= vertex <= x.max())
    return fit


def power_law(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """(exponent, coefficient) of y = coefficient * x^exponent, least squares in log-log."""
    if len(set(xs)) < 2:
        return None
    slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(slope), float(math.exp(intercept))


@dataclass
class Parametric:
    """Approach 3: L(N, D) = E + A/N^alpha + B/D^beta."""

    E: float  # the loss no size or data removes (this corpus's entropy, as far as the fit knows)
    A: float  # the size term's coefficient
    B: float  # the data term's coefficient
    alpha: float  # the size term's exponent
    beta: float  # the data term's exponent
    huber: float  # the objective at the optimum
    starts: int  # minimizations run

    def loss(self, n, d):
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray):
    """Huber loss of log L's residuals under the LSE form, and its gradient (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    lse = top + np.log(weights.sum(axis=0))
    weights /= weights.sum(axis=0)
    r = lse - log_l
    small = np.abs(r) <= HUBER_DELTA
    value = np.where(small, 0.5 * r * r, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA)).sum()
    dr = np.where(small, r, HUBER_DELTA * np.sign(r))
    grad = np.array([(dr * weights[0]).sum(), (dr * weights[1]).sum(), (dr * weights[2]).sum(),
                     -(dr * weights[0] * log_n).sum(), -(dr * weights[1] * log_d).sum()])
    return value, grad


def fit_parametric(pts: list[Point]) -> Parametric | None:
    """Approach 3 over the points; None with fewer than MIN_PARAMETRIC of them."""
    if len(pts) < MIN_PARAMETRIC:
        return None
    optimize = _scipy_optimize()
    data = (np.log([p.n for p in pts]), np.log([p.d for p in pts]), np.log([p.loss for p in pts]))
    grid = [(a, b, e, al, be) for a in (0.0, 5.0, 10.0, 15.0) for b in (0.0, 5.0, 10.0, 15.0)
            for e in (-1.0, 0.0, 1.0) for al in (0.2, 0.5, 1.0) for be in (0.2, 0.5, 1.0)]
    # Hoffmann et al. start from every grid point; the objective at each is cheap, a minimization
    # is not (the Huber loss is flat far from the data): start from the STARTS best grid points
    ranked = sorted(grid, key=lambda start: _objective(np.array(start), *data)[0])
    best = None
    for start in ranked[:STARTS]:
        res = optimize.minimize(_objective, np.array(start), args=data, jac=True, method="SLSQP",
                                bounds=[(-10, 40), (-10, 40), (-5, 5), (0, 3), (0, 3)], options=OPTIONS)
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = (float(v) for v in best.x)
    return Parametric(math.exp(e), math.exp(a), math.exp(b), alpha, beta, float(best.fun), STARTS)


@dataclass
class Prediction:
    """The fitted L's best size for a budget, D = C / flops_per_token(N)."""

    flops: float
    n: float
    d: float
    loss: float
    extrapolated: bool  # N outside the sizes trained
    at_edge: bool  # N at an end of the search: the fit found no optimum within SEARCH of the sizes


def predict(law: Parametric, fpt_law: tuple[float, float], flops: float, n_range: tuple[float, float]) -> Prediction:
    """The N minimizing L(N, flops / fpt(N)), searched from 1/SEARCH of the smallest N trained to
    SEARCH x the largest."""
    optimize = _scipy_optimize()
    exponent, coef = fpt_law
    tokens = lambda log_n: flops / (coef * math.exp(log_n) ** exponent)
    lo, hi = math.log(n_range[0] / SEARCH), math.log(n_range[1] * SEARCH)
    res = optimize.minimize_scalar(lambda x: float(law.loss(math.exp(x), tokens(x))), bounds=(lo, hi),
                                   method="bounded")
    n = math.exp(res.x)
    return Prediction(flops, n, tokens(res.x), float(law.loss(n, tokens(res.x))),
                      not n_range[0] <= n <= n_range[1], bool(min(res.x - lo, hi - res.x) < 1e-3 * (hi - lo)))


@dataclass
class Scaling:
    """Every fit of one set of runs."""

    params: str
    points: list[Point]
    budgets: list[BudgetFit] = field(default_factory=list)
    exponent: tuple[float, float] | None = None  # N_opt = coefficient * C^a: (a, coefficient)
    parametric: Parametric | None = None
    flops_per_token: tuple[float, float] | None = None  # fpt = coefficient * N^exponent: (exponent, coefficient)
    prediction: Prediction | None = None


def fit(pts: list[Point], params: str = "non_embedding", predict_flops: float | None = None) -> Scaling:
    """Approaches 2 and 3, and the prediction for ``predict_flops`` where the fits allow it."""
    out = Scaling(params, pts)
    for flops in sorted({p.budget for p in pts if p.budget is not None}):
        out.budgets.append(fit_budget(flops, [p for p in pts if p.budget == flops]))
    found = [b for b in out.budgets if b.n_opt is not None]
    out.exponent = power_law([b.flops for b in found], [b.n_opt for b in found])
    out.parametric = fit_parametric(pts)
    out.flops_per_token = power_law([p.n for p in pts], [p.flops_per_token for p in pts])
    if predict_flops is not None and out.parametric is not None and out.flops_per_token is not None:
        ns = [p.n for p in pts]
        out.prediction = predict(out.parametric, out.flops_per_token, predict_flops, (min(ns), max(ns)))
    return out
