"""Seeds, honestly: jobs that differ only by ``seed`` are one configuration.

``python train.py -m model.heads=2,4 seed=1,2,3`` trains each configuration (here a heads value)
three times. A configuration's result is the mean over its completed seeds, its spread their
sample standard deviation (ddof=1), and the configurations are ranked by the mean. On corpora of a
few thousand words the differences between configurations are often a few hundredths of a nat, as
large as the seed noise, so each configuration is also marked against the best one:

**The rule** (:func:`distinguishable`): a configuration is *not distinguishable* from the best when
the gap between their means is smaller than the larger of their two standard deviations,
``mean - best_mean < max(std, best_std)``. A configuration with one completed seed has no std of
its own and takes the pooled within-configuration std of the sweep,
``sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1))``, the seed noise every configuration shares. Where no
configuration has two seeds there is no spread to compare with and nothing is marked.

Everything that ranks or fits configurations (the summary's ranking, parameter importance, the
scaling fit, the Pareto front) takes :meth:`Configuration.mean`, never one seed's value.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from article_gpt.runs.record import Status
from article_gpt.sweeps.records import Run, swept_label

SEED = "seed"  # the top-level config key (conf/train.yaml); its short key in Run.swept too


def value(run: Run, key: str = "val_loss") -> float | None:
    """A completed run's finite number for a record key; None for anything else (a pruned trial's
    loss is where it was stopped, not a result)."""
    if run.status != Status.COMPLETED:
        return None
    v = run.val_loss if key == "val_loss" else run.metrics.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


@dataclass
class Configuration:
    """The runs that differ only by their seed."""

    swept: dict[str, str]  # short swept key -> value, the seed left out
    runs: list[Run] = field(default_factory=list)  # its members, in the order they were given

    @property
    def name(self) -> str:
        """``heads=4,lr=0.00152``: its swept values, rounded for reading."""
        return swept_label(self.swept) or "(all runs)"

    @property
    def seeds(self) -> list[str]:
        """Its members' seeds, in numeric order where they are numbers."""
        found = [r.swept.get(SEED, "-") for r in self.runs]
        return sorted(found, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))

    def values(self, key: str = "val_loss") -> list[float]:
        """The key's value in each completed member that has one."""
        return [v for r in self.runs if (v := value(r, key)) is not None]

    def n(self, key: str = "val_loss") -> int:
        return len(self.values(key))

    def mean(self, key: str = "val_loss") -> float | None:
        vals = self.values(key)
        return statistics.fmean(vals) if vals else None

    def std(self, key: str = "val_loss") -> float | None:
        """Sample standard deviation over the seeds; None with fewer than two."""
        vals = self.values(key)
        return statistics.stdev(vals) if len(vals) >= 2 else None


def configurations(runs: list[Run]) -> list[Configuration]:
    """The runs grouped by their swept values without the seed, ranked by mean best val loss
    (lowest first); configurations with no completed run last, in the order first seen."""
    groups: dict[tuple, Configuration] = {}
    for r in runs:
        swept = {k: v for k, v in r.swept.items() if k != SEED}
        groups.setdefault(tuple(swept.items()), Configuration(swept)).runs.append(r)
    configs = list(groups.values())
    return sorted(configs, key=lambda c: (c.mean() is None, c.mean() or 0.0))  # stable: first seen among equals


def seeded(configs: list[Configuration]) -> bool:
    """True when some configuration was trained with more than one seed."""
    return any(len(c.runs) > 1 for c in configs) and any(SEED in r.swept for c in configs for r in c.runs)


def pooled_std(configs: list[Configuration], key: str = "val_loss") -> float | None:
    """The within-configuration std of the whole sweep; None where no configuration has two seeds."""
    dof = sum(c.n(key) - 1 for c in configs if c.n(key) >= 2)
    if not dof:
        return None
    return math.sqrt(sum((c.n(key) - 1) * c.std(key) ** 2 for c in configs if c.n(key) >= 2) / dof)


def spread(config: Configuration, configs: list[Configuration], key: str = "val_loss") -> float | None:
    """The configuration's own std, or the sweep's pooled std where it has one seed."""
    own = config.std(key)
    return own if own is not None else pooled_std(configs, key)


def distinguishable(config: Configuration, best: Configuration, configs: list[Configuration],
                    key: str = "val_loss") -> bool | None:
    """Is ``config`` told apart from ``best`` by more than the seed noise (module docstring's rule)?
    None where it cannot be said: no mean, or no spread to compare with."""
    mean, best_mean = config.mean(key), best.mean(key)
    spreads = [spread(config, configs, key), spread(best, configs, key)]
    if mean is None or best_mean is None or None in spreads:
        return None
    return abs(mean - best_mean) >= max(spreads)
