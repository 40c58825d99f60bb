"""What mattered: parameter importance from ``optuna.importance``, for grid sweeps and searches alike.

One home for both: an in-memory Optuna study is built from the run records, one trial per
configuration (:mod:`article_gpt.sweeps.seeds`: the seeds of a configuration are one trial, its
value their mean best val loss), so a grid sweep and an Optuna search are read the same way and
seed noise is averaged out before anything is attributed to a key. The seed itself is never a
parameter.

Distributions come from the swept values and their scale (``records.key_scales``): numbers on a log
scale (a learning rate, ``tag(log, ...)`` in a search) are log-uniform, other numbers uniform
(integers as integers), anything else (a config group's choice) categorical.

The evaluator: fANOVA (a random forest's variance decomposition) where scikit-learn is importable,
otherwise PED-ANOVA, Optuna 5's default. PED-ANOVA asks which values are over-represented among
the best trials; its default top 10% of a dozen configurations is one trial, so here the top
quantile holds at least ``MIN_TOP`` configurations. A table needs at least two swept keys (the
seed not counted) and ``MIN_CONFIGURATIONS`` configurations with a result: with fewer, any split
of the importance is noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from article_gpt.sweeps.records import CATEGORICAL, LOG, Run, as_numbers, key_scales
from article_gpt.sweeps.seeds import SEED, Configuration

MIN_CONFIGURATIONS = 4  # configurations with a mean (every key seen with at least two values)
MIN_TOP = 2  # PED-ANOVA's top quantile holds at least this many configurations
FANOVA, PED_ANOVA = "fANOVA", "PED-ANOVA"


@dataclass
class Importance:
    """The importance of each swept key, highest first, and how it was measured."""

    scores: dict[str, float]  # short key -> importance, summing to 1
    evaluator: str  # FANOVA or PED_ANOVA
    trials: int  # configurations in the study

    def markdown(self) -> str:
        lines = ["| swept key | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in self.scores.items()]
        return "\n".join(lines)

    @property
    def caption(self) -> str:
        return (f"Parameter importance of the mean best val loss over {self.trials} configurations "
                f"(optuna.importance, evaluator {self.evaluator}).")


def _evaluator(trials: int):
    """fANOVA where scikit-learn is importable, otherwise PED-ANOVA; the evaluator and its name."""
    import optuna.importance as imp

    try:
        import sklearn  # noqa: F401 - fANOVA's random forest
    except ImportError:
        return imp.PedAnovaImportanceEvaluator(target_quantile=max(0.1, MIN_TOP / trials)), PED_ANOVA
    return imp.FanovaImportanceEvaluator(seed=0), FANOVA


def distribution(values: list[str], scale: str):
    """The Optuna distribution of a key's swept values on its scale (None when only one value)."""
    import optuna.distributions as D

    distinct = list(dict.fromkeys(values))
    if len(distinct) < 2:
        return None
    numbers = as_numbers(distinct)
    if scale == CATEGORICAL or numbers is None:
        return D.CategoricalDistribution(distinct)
    log = scale == LOG
    if all(float(x).is_integer() and "." not in v and "e" not in v.lower() for x, v in zip(numbers, distinct)):
        return D.IntDistribution(int(min(numbers)), int(max(numbers)), log=log)
    return D.FloatDistribution(min(numbers), max(numbers), log=log)


def param_value(raw: str, dist):
    """A swept value as the distribution holds it."""
    import optuna.distributions as D

    if isinstance(dist, D.CategoricalDistribution):
        return raw
    return int(float(raw)) if isinstance(dist, D.IntDistribution) else float(raw)


def study(runs: list[Run], configs: list[Configuration]):
    """An in-memory Optuna study with one trial per configuration that has a mean, over the swept
    keys (the seed left out) that take two values or more among them; None where there is too
    little to rank (module docstring)."""
    import optuna

    rated = [c for c in configs if c.mean() is not None]
    if len(rated) < MIN_CONFIGURATIONS:
        return None
    scales = key_scales(runs)
    dists = {k: d for k in scales if k != SEED
             if (d := distribution([c.swept[k] for c in rated], scales[k])) is not None}
    if len(dists) < 2:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = optuna.create_study(direction="minimize")
    for c in rated:
        result.add_trial(optuna.trial.create_trial(
            params={k: param_value(c.swept[k], d) for k, d in dists.items()}, distributions=dists, value=c.mean()))
    return result


def importance(runs: list[Run], configs: list[Configuration]) -> Importance | None:
    """The importance table of :func:`study`, or None where there is no study."""
    import optuna

    built = study(runs, configs)
    if built is None:
        return None
    evaluator, name = _evaluator(len(built.trials))
    scores = optuna.importance.get_param_importances(built, evaluator=evaluator)
    return Importance({k: float(v) for k, v in scores.items()}, name, len(built.trials))
