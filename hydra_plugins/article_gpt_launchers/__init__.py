"""Article GPT's launchers, where Hydra looks for plugins.

Hydra instantiates a launcher only if its class is defined under the ``hydra_plugins``
namespace package, so ``conf/hydra/launcher/{joblib,submitit_local,submitit_slurm}.yaml`` name
these subclasses; what they change (a job whose process dies is recorded and the sweep goes on)
is article_gpt/sweeps/launchers.py. Hydra imports this module at every start: it stays cheap
(no joblib, submitit or torch until a launcher launches).
"""

from article_gpt.sweeps import launchers


class JoblibLauncher(launchers.JoblibLauncher):
    """``hydra/launcher=joblib``."""


class LocalLauncher(launchers.LocalLauncher):
    """``hydra/launcher=submitit_local``."""


class SlurmLauncher(launchers.SlurmLauncher):
    """``hydra/launcher=submitit_slurm``."""
