"""Article GPT's Optuna sweeper, where Hydra looks for plugins.

Hydra instantiates a sweeper only if its class is defined under the ``hydra_plugins``
namespace package, so ``conf/hydra/sweeper/optuna.yaml`` names this subclass; the sweeper
itself is article_gpt/sweeps/optuna_sweeper.py. Hydra imports this module at every start:
it must stay cheap (no optuna, no torch).
"""

from article_gpt.sweeps.optuna_sweeper import OptunaSweeperImpl


class OptunaSweeper(OptunaSweeperImpl):
    """``hydra/sweeper=optuna``: Optuna's ask-and-tell over any Hydra launcher."""
