"""Train Article GPT: `python train.py [overrides]`, or a sweep with `python train.py -m ...`.

Hydra composes conf/train.yaml; article_gpt.training.run does the rest. See README.md.
"""

import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("ARTICLE_GPT_ROOT", str(Path(__file__).resolve().parent))

import article_gpt.config  # noqa: E402,F401  (cheap, no torch: registers the ${uid:} resolver)
from article_gpt.errors import exit_on_user_error, run_main  # noqa: E402
from article_gpt.recovery.argv import rewrite_argv  # noqa: E402
from article_gpt.sweeps import plan  # noqa: E402  (cheap: Hydra and the counts load when asked)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # torch and Lightning load here, after Hydra's ValidateConfig callback has checked the config
    # (conf/hydra/default.yaml): a bad value fails in well under a second, before the run dir exists
    from article_gpt.recovery.signals import exit_on_signal, handle_signals
    from article_gpt.sweeps.callbacks import summarize_interrupted_sweep
    from article_gpt.training.run import train

    # a signal: checkpoint, records, W&B closed, then exit 128 + signum (article_gpt/recovery/signals.py)
    with exit_on_user_error(), exit_on_signal(summarize_interrupted_sweep), handle_signals():
        return train(cfg)


def expand_home(args: list[str]) -> list[str]:
    """``key=~/dir`` as typed in bash: the shell leaves that ``~`` alone (``key`` is no shell
    variable) and Hydra's override grammar rejects it, so a value's leading ``~`` (and that of
    each value of a sweep list, ``key=~/a,~/b``) becomes the home directory here. Quoted values
    (``'key="~/a"'``) reach Hydra as they are; the data loader expands them itself."""
    home = os.path.expanduser("~")
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and not key.startswith("-"):
            arg = key + eq + re.sub(r"(^|,)~(?=/|,|$)", lambda m: m.group(1) + home, value)
        out.append(arg)
    return out


if __name__ == "__main__":
    sys.argv = expand_home(sys.argv)
    with exit_on_user_error():  # resume=<run dir> / resume_sweep=<dir>: that run's own overrides
        sys.argv, planned = plan.split_flag(sys.argv)
        sys.argv = rewrite_argv(sys.argv)
    if planned:  # plan=true: the sweep's jobs and their cost, nothing trained (article_gpt/sweeps/plan.py)
        sys.exit(plan.show(sys.argv))
    run_main(main)  # Hydra's own errors (an unknown option, a bad override) are one line too
