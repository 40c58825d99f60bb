"""The Hydra callbacks a single run starts behind (conf/hydra/default.yaml, ``hydra.callbacks``).

``ValidateConfig``: a run's config is checked before Hydra creates its directory.
``CheckCorpus``: a single run's corpus is read (and its tokens cached) before that, too.
``ProtectFinishedRun``: a single run pointed at a finished run's directory stops before Hydra
writes anything there (Hydra saves ``.hydra/`` and opens ``train.log`` before the task runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# Hydra imports this module before every run: what it needs comes in inside each method, so a
# config error is reported before torch and Lightning load (ValidateConfig).


class ValidateConfig(Callback):
    """A run's config is checked before Hydra creates its directory: a bad value is one line in
    well under a second (torch is not loaded yet) and leaves nothing behind. A sweep checks its
    shared config before its first job (swept keys keep their valid defaults here); each job
    checks its own values in ``train``, inside its folder, so the sweep records which job failed
    and why. Each run is validated once: a single run here, a sweep job in ``train``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, Path(str(config.hydra.run.dir)).parent, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, Path(str(config.hydra.sweep.dir)).parent, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, parent: Path, dir_key: str) -> None:
        from article_gpt.config.machine import check_writable
        from article_gpt.config.rules import validate
        from article_gpt.config.shape import with_pretrained_shape
        from article_gpt.errors import exit_on_user_error

        with exit_on_user_error():
            task = with_pretrained_shape(config)
            validate(task, hydra=task.hydra)
            log_dir = Path(str(config.paths.log_dir)) if "paths" in config else None
            if log_dir is not None and (parent == log_dir or log_dir in parent.parents):
                check_writable("paths.log_dir", config.paths.log_dir, parent)
            else:
                check_writable(dir_key, OmegaConf.select(config, dir_key), parent)


class CheckCorpus(Callback):
    """A single run's corpus is read and tokenized before Hydra creates its directory: a missing,
    empty or too short corpus is one line in seconds (torch loads here, as the run needs it next),
    not a failed run. The tokens land in the token cache the run then reads. A sweep job reads
    its corpus in ``train``, inside its folder."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import instantiate

        from article_gpt.config.shape import with_pretrained_shape
        from article_gpt.errors import exit_on_user_error

        with exit_on_user_error():
            instantiate(with_pretrained_shape(config).data, _convert_="all").token_counts()


class ProtectFinishedRun(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from article_gpt.errors import exit_on_user_error
        from article_gpt.runs.dirs import refuse_finished

        if config.get("resume"):  # resume= names a finished run on purpose (article_gpt/recovery/resume.py decides)
            return
        with exit_on_user_error():  # a finished run, or a damaged record: one line, nothing written
            refuse_finished(Path(str(config.hydra.run.dir)))
