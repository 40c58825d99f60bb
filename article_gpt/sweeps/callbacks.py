"""Hydra callbacks (conf/hydra/default.yaml, ``hydra.callbacks``).

``ProtectFinishedRun``: a single run pointed at a finished run's directory stops before Hydra
writes anything there (Hydra saves ``.hydra/`` and opens ``train.log`` before the task runs).

``SweepSummary``: the sweep's summary, printed and written next to its jobs. Hydra calls
``on_multirun_end`` in the process that started the sweep once every job has returned; the
jobs themselves may have run anywhere (joblib, submitit), so the summary is built from their
directories on disk (article_gpt.sweeps.records), not from return values.

Failed jobs return NaN instead of raising (article_gpt.training.run), so the sweep reaches this point;
here, after the summary, a sweep with any job that did not complete exits with status 1.
``on_multirun_end`` is the last thing Hydra does, so nothing is skipped by exiting.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# Hydra imports this module before every run: what it needs comes in inside each method, so a
# config error is reported before torch and Lightning load (ValidateConfig).


class ValidateConfig(Callback):
    """A run's config is checked before Hydra creates its directory: a bad value is one line in
    well under a second (torch is not loaded yet) and leaves nothing behind. A single run's corpus
    is checked there too (one line in seconds). A sweep checks its shared config before its first
    job (swept keys keep their valid defaults here); each job checks its own values and corpus in
    ``train``, inside its folder, so the sweep records which job failed and why."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = self._check(config, Path(str(config.hydra.run.dir)).parent, "hydra.run.dir")
        # The corpus too (torch loads here, as the run needs it next): a missing, empty or
        # too short file is one line, not a failed run. Tokens land in the cache the run reads.
        from hydra.utils import instantiate

        from article_gpt.errors import exit_on_user_error

        with exit_on_user_error():
            instantiate(task.data, _convert_="all").token_counts()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, Path(str(config.hydra.sweep.dir)).parent, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, parent: Path, dir_key: str) -> DictConfig:
        import copy

        from article_gpt.config.machine import check_writable
        from article_gpt.config.rules import validate
        from article_gpt.errors import exit_on_user_error

        task = copy.deepcopy(config)  # validation may fill in keys; the run composes its own
        with exit_on_user_error():
            validate(task, hydra=task.hydra)
            log_dir = Path(str(config.paths.log_dir)) if "paths" in config else None
            if log_dir is not None and (parent == log_dir or log_dir in parent.parents):
                check_writable("paths.log_dir", config.paths.log_dir, parent)
            else:
                check_writable(dir_key, OmegaConf.select(config, dir_key), parent)
        return task


class ProtectFinishedRun(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from article_gpt.tracking.recorder import finished_run_refusal

        if config.get("resume"):  # resume= names a finished run on purpose (article_gpt/recovery/resume.py decides)
            return
        refusal = finished_run_refusal(Path(str(config.hydra.run.dir)))
        if refusal is not None:
            print(f"error: {refusal}", file=sys.stderr, flush=True)
            raise SystemExit(2)


class SweepSummary(Callback):
    def __init__(self, fail_on_failed_jobs: bool = True) -> None:
        # False for searches where failed trials are expected (e.g. Optuna exploring ranges)
        self.fail_on_failed_jobs = fail_on_failed_jobs

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # the same config object the launcher resolved, so ${now:} and ${uid:} give the same dir
        from article_gpt.sweeps import records, summary

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            runs = records.load_runs([sweep_dir])
            table = summary.write_report(runs, sweep_dir, f"Sweep {sweep_dir.name}")
        except Exception as err:  # Hydra would turn this into a warning; say plainly what is missing
            print(f"sweep summary: could not be written for {sweep_dir} ({type(err).__name__}: {err}); "
                  f"rebuild it with: python scripts/compare_runs.py {sweep_dir}", file=sys.stderr, flush=True)
            return
        print(f"\nSweep {sweep_dir.name}: {len(runs)} jobs in {sweep_dir}\n\n{table}\n", flush=True)
        print(f"summary: {sweep_dir / 'summary.md'} (+ summary.csv, comparison.png)", flush=True)
        failed = summary.failure_line(runs)
        if failed is not None:
            print(f"{failed}; see the error column and each job's error.log", file=sys.stderr, flush=True)
            if self.fail_on_failed_jobs:
                raise SystemExit(1)


def summarize_interrupted_sweep() -> None:
    """A sweep stopped by a signal still gets its summary, the stopped job marked interrupted
    (Hydra calls ``on_multirun_end`` only when every job has returned)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = OmegaConf.create({"hydra": {"sweep": {"dir": str(HydraConfig.get().sweep.dir)}}})
        SweepSummary(fail_on_failed_jobs=False).on_multirun_end(sweep)
