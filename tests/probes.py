"""Test-only Lightning callbacks that a test adds to any run, in any launcher's job process, as config:
``+callbacks.<name>={_target_:probes.<Class>,<arg>:<value>}`` with ``tests/`` on PYTHONPATH (the jobs of joblib,
submitit and SLURM import them from there as they import the rest of the config's targets).

- ``DieAtStep``: the job's process sends itself ``signal`` (SIGKILL, SIGSEGV) when training has
  finished step ``step``; only in sweep job ``job`` if given. Nothing of ours runs after it.
- ``HoldAtStep``: a barrier at step ``step`` between the jobs running side by side.
- ``CoresProbe``: at step ``step`` the training thread writes, as the kernel sees them, its CPU
  affinity (``os.sched_getaffinity`` of that thread) and torch's thread count, to
  ``<folder>/<job dir name>.json``, with its process's parent and whether that parent (a joblib
  worker) had torch loaded, as /proc/<ppid>/maps shows.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import lightning as L


def job_name() -> str:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir).name


class DieAtStep(L.Callback):
    def __init__(self, step: int, signal: str = "SIGKILL", job: str | None = None) -> None:
        self.step, self.signal, self.job = step, signal, None if job is None else str(job)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and (self.job is None or job_name() == self.job):
            os.kill(os.getpid(), signal.Signals[self.signal])


class CoresProbe(L.Callback):
    def __init__(self, folder: str, step: int = 1) -> None:
        self.folder, self.step = Path(folder), step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        import torch

        seen = {"affinity": sorted(os.sched_getaffinity(threading.get_native_id())),
                "torch_threads": torch.get_num_threads(), "pid": os.getpid(), "ppid": os.getppid(),
                "parent_has_torch": "libtorch_cpu" in Path(f"/proc/{os.getppid()}/maps").read_text()}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{job_name()}.json").write_text(json.dumps(seen))


class HoldAtStep(L.Callback):
    """At step ``step``: write ``<folder>/<job dir name>`` and hold training until ``jobs`` such files
    exist, so that a test's signal finds every job of a parallel sweep mid-training."""

    def __init__(self, folder: str, step: int = 2, jobs: int = 2) -> None:
        self.folder, self.step, self.jobs = Path(folder), step, jobs

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        import time

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / job_name()).touch()
        deadline = time.monotonic() + 300
        while len(list(self.folder.iterdir())) < self.jobs and time.monotonic() < deadline:
            time.sleep(0.05)  # a barrier between two processes: nothing to wait on but the files
