"""Train Article GPT: `python train.py [overrides]`, or a sweep with `python train.py -m ...`.

Hydra composes conf/train.yaml; article_gpt.training.run does the rest. See README.md.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("ARTICLE_GPT_ROOT", str(Path(__file__).resolve().parent))

from article_gpt.errors import exit_on_user_error  # noqa: E402
from article_gpt.training.run import train  # noqa: E402  (importing it registers the ${uid:} resolver)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    with exit_on_user_error():
        return train(cfg)


if __name__ == "__main__":
    main()
