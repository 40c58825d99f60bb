"""Who a run is: its directory, its W&B group and name, and whether it is a sweep job.

Read from Hydra's runtime config. A sweep job is named by the values its sweep varies only
(``heads=4,block_size=32``), so W&B and the sweep summary compare runs by what differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from article_gpt.runs.dirs import MULTIRUN
from article_gpt.runs.naming import parse_overrides, short_keys


@dataclass
class RunContext:
    run_dir: Path
    group: str  # the sweep id for every job of a sweep; the run's own id otherwise
    name: str  # the job's overrides in short form, e.g. "heads=4,block_size=32"
    overrides: list[str]
    multirun: bool


def short_name(overrides: list[str]) -> str:
    """``model.heads=4`` -> ``heads=4`` (the shortest unique key suffix, as in sweep summaries);
    where the run writes (``paths.*``, ``hydra.*``) and its tags are not part of its name."""
    parsed = parse_overrides(overrides)
    short = short_keys(list(parsed))
    return ",".join(f"{short[k]}={v}" for k, v in parsed.items())


def swept_overrides(job: list[str], sweep_dir: Path) -> list[str]:
    """The overrides this sweep varies, as this job got them.

    Hydra records the sweep's own command line in ``multirun.yaml`` before any job starts. A job
    override whose text is there too (``trainer=debug``) is fixed; one whose text differs
    (``model.heads=4`` from ``model.heads=2,4,8``) or that a sweeper chose is swept.
    """
    try:
        fixed = set(OmegaConf.load(sweep_dir / MULTIRUN).hydra.overrides.task)
    except Exception:  # unreadable record (e.g. a launcher without a shared disk): name by all
        return job
    return [o for o in job if o not in fixed] or job


def run_context(cfg: DictConfig) -> RunContext:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    group = Path(hc.sweep.dir).name if multirun else run_dir.name
    # A W&B Sweeps agent starts each run as a plain `python train.py key=value ...` with the
    # sweep's id in WANDB_SWEEP_ID (sweeps/*.yaml): its runs are grouped by that sweep.
    group = os.environ.get("WANDB_SWEEP_ID") or group
    named = swept_overrides(overrides, Path(hc.sweep.dir)) if multirun else overrides
    return RunContext(run_dir, group, short_name(named) or run_dir.name, overrides, multirun)
