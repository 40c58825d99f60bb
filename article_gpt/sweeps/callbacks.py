"""The Hydra callback that reports a sweep (conf/hydra/default.yaml, ``hydra.callbacks``).

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
from omegaconf import DictConfig


class SweepSummary(Callback):
    def __init__(self, fail_on_failed_jobs: bool = True) -> None:
        # False for searches where failed trials are expected (e.g. Optuna exploring ranges)
        self.fail_on_failed_jobs = fail_on_failed_jobs

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # the same config object the launcher resolved, so ${now:} and ${uid:} give the same dir
        from article_gpt.runs.record import RecordError
        from article_gpt.sweeps import pareto, records, scaling_report, summary

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            runs = records.load_runs([sweep_dir])
            table = summary.write_report(runs, sweep_dir, f"Sweep {sweep_dir.name}")
            table += "".join(f"\n{line}" for line in pareto.report(runs, sweep_dir))  # a multi-objective search's front
        except RecordError as err:  # a job's damaged record: the sweep did not end as it should
            print(f"sweep summary: not written: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        except Exception as err:  # Hydra would turn this into a warning; say plainly what is missing
            print(f"sweep summary: could not be written for {sweep_dir} ({type(err).__name__}: {err}); "
                  f"rebuild it with: python scripts/compare_runs.py {sweep_dir}", file=sys.stderr, flush=True)
            return
        print(f"\nSweep {sweep_dir.name}: {len(runs)} jobs in {sweep_dir}\n\n{table}\n", flush=True)
        print(f"summary: {sweep_dir / 'summary.md'} (+ summary.csv, comparison.png)", flush=True)
        if line := scaling_report.sweep_line(runs, sweep_dir, f"Sweep {sweep_dir.name}", config.get("scaling")):
            print(line, flush=True)  # a sweep of several sizes and budgets: its scaling fit
        failed = summary.failure_line(runs)
        if failed is not None:
            print(f"{failed}; see the error column and each job's error.log", file=sys.stderr, flush=True)
            if self.fail_on_failed_jobs:
                raise SystemExit(1)


_IN_A_JOB_PROCESS = False  # set in a joblib job's own process (sweeps/launchers.py): not the sweep's


def in_a_job_process() -> None:
    """This process runs one job of a sweep started elsewhere, whose launcher writes the summary."""
    global _IN_A_JOB_PROCESS
    _IN_A_JOB_PROCESS = True


def summarize_interrupted_sweep(sweep_dir: Path | None = None) -> None:
    """A sweep stopped by a signal still gets its summary, the stopped jobs marked interrupted
    (Hydra calls ``on_multirun_end`` only when every job has returned): from the sweep's process,
    where a job runs there (the basic launcher) or its launcher has seen every job end (joblib)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if sweep_dir is None:
        if _IN_A_JOB_PROCESS or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        sweep_dir = Path(str(HydraConfig.get().sweep.dir))
    try:
        SweepSummary(fail_on_failed_jobs=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {
            "dir": str(sweep_dir)}}}))
    except SystemExit:  # the signal's exit status wins; the line is printed
        pass
