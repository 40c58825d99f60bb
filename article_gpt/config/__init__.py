"""The rules a config must pass before anything heavy is built: single-key and related-key rules
(rules.py), keys added with ``+`` (keys.py), and what this machine has (machine.py). No torch.

Importing the package registers ``${uid:}``, which every run and sweep directory name uses: any
process that composes or resolves a config (the launcher's, a joblib worker, a SLURM job) has
imported it by then.
"""

import secrets

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${uid:}``: 6 random hex digits, the same everywhere in one composed config (the cache
    is copied into every job of a sweep), so run and sweep ids never collide, even when two
    start in the same microsecond."""
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)


register_resolvers()
