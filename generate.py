"""Generate text from a trained checkpoint: `python generate.py ckpt=PATH prompt="..." [overrides]`.

Hydra composes conf/generate.yaml; article_gpt.generation does the rest. See README.md.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("ARTICLE_GPT_ROOT", str(Path(__file__).resolve().parent))

from article_gpt.errors import exit_on_user_error, run_main  # noqa: E402
from article_gpt.generation import run  # noqa: E402  (cheap: torch loads after the options are checked)


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg)


if __name__ == "__main__":
    run_main(main)  # Hydra's own errors (a misspelt option) are one line too
