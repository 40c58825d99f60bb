"""How many CPU cores a job may use, and torch's intra-op threads set to match (``threads: auto``).

Two training processes on the same cores, each with torch's default of one thread per core,
ran each step 3.4x slower here: parallel jobs must split the cores, not share them. The cores
a job was given:

- a single run, or a sweep on the basic launcher (one job at a time): every core;
- ``hydra/launcher=joblib``: cores / ``n_jobs``, and the job is pinned to its own share
  (``os.sched_setaffinity``) by claiming one of ``n_jobs`` slots, so jobs running side by
  side never land on the same cores;
- SLURM (``hydra/launcher=submitit_slurm``, or any run inside an allocation):
  ``SLURM_CPUS_PER_TASK`` (``hydra.launcher.cpus_per_task``);
- ``hydra/launcher=submitit_local``: ``hydra.launcher.cpus_per_task`` (it starts every job at once);
- ``hydra/launcher=ray``: the task's ``hydra.launcher.ray.remote.num_cpus``.

A DDP job's processes share its cores: each rank gets cores / ``trainer.devices`` threads
(under SLURM each rank is a task with cores of its own). ``threads: 4`` sets the count directly.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from article_gpt.errors import ConfigError


def available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _launcher() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().launcher if HydraConfig.initialized() else None


def launcher_kind(launcher: DictConfig | None) -> str:
    """joblib, slurm, local, ray or basic: the launcher its ``_target_`` names (ours or Hydra's)."""
    target = str(OmegaConf.select(launcher, "_target_") or "") if launcher is not None else ""
    for kind in ("Joblib", "Slurm", "Local", "Ray"):
        if target.endswith(f"{kind}Launcher"):
            return kind.lower()
    return "basic"


def local_processes(cfg: DictConfig) -> int:
    """Training processes of this job on this machine: ``trainer.devices`` under DDP, else 1.
    Under SLURM each rank is a task of its own with its own cores: 1."""
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    target = str(OmegaConf.select(cfg, "trainer.strategy._target_") or strategy or "")
    devices = OmegaConf.select(cfg, "trainer.devices")
    if "ddp" not in target.lower() or not isinstance(devices, int) or devices < 1:
        return 1
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return 1
    return devices


def joblib_jobs(n_jobs: Any, cores: int) -> int:
    """joblib's reading of ``n_jobs``: -1 all cores, -2 all but one, ..."""
    n = int(n_jobs if n_jobs is not None else -1)
    return max(1, cores + 1 + n) if n < 0 else max(1, n)


@dataclass
class CoreShare:
    """The cores a job may use and the threads of each of its processes; ``release`` undoes
    the pinning (a joblib worker runs the next job of the sweep)."""

    threads: int
    cores: int
    reason: str
    pinned: list[int] | None = None
    _restore: dict = field(default_factory=dict, repr=False)

    def record(self) -> dict:
        """For metrics.json: what this job ran with."""
        return {"threads": self.threads, "cores_given": self.cores, "cores_reason": self.reason,
                "pinned_cores": self.pinned}

    def release(self) -> None:
        try:
            if "affinity" in self._restore:
                _pin(self._restore.pop("affinity"))
            if "threads" in self._restore:
                import torch

                torch.set_num_threads(self._restore.pop("threads"))
            lock = self._restore.pop("lock", None)
            if lock is not None:
                os.close(lock)  # closing the descriptor releases the slot's lock
        except OSError:
            pass


def _pin(cores: list[int]) -> None:
    """Pin every thread of this process (torch's pool may already exist) to ``cores``."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (OSError, ValueError):
            pass  # a thread that just ended
    os.sched_setaffinity(0, cores)


def _claim_slot(sweep_dir: str, n_jobs: int) -> tuple[int, int]:
    """One of the sweep's ``n_jobs`` slots, held until the descriptor is closed: at most
    ``n_jobs`` jobs run at once, so one of the slots is always free."""
    key = hashlib.sha1(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "article-gpt-core-slots" / key
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(n_jobs):
            fd = os.open(folder / f"{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return slot, fd
            except BlockingIOError:
                os.close(fd)
        import time

        time.sleep(0.2)  # a job of the previous batch is still closing


def launcher_share(launcher: DictConfig | None, n_cores: int) -> tuple[int, str]:
    """The cores one job of ``launcher`` gets on a machine of ``n_cores`` (the module docstring's
    rule, before SLURM's own environment), and why: what a job claims and what a plan assumes."""
    kind = launcher_kind(launcher)
    if kind == "joblib":
        n_jobs = joblib_jobs(OmegaConf.select(launcher, "n_jobs"), n_cores)
        return max(1, n_cores // min(n_jobs, n_cores)), f"{n_cores} cores / hydra.launcher.n_jobs={n_jobs}"
    if kind == "ray":  # a Ray task holds remote.num_cpus cores (Ray's default: 1)
        return max(1, int(float(OmegaConf.select(launcher, "ray.remote.num_cpus") or 1))), \
            "hydra.launcher.ray.remote.num_cpus"
    if kind in ("local", "slurm") and OmegaConf.select(launcher, "cpus_per_task"):
        return int(OmegaConf.select(launcher, "cpus_per_task")), "hydra.launcher.cpus_per_task"
    return n_cores, "all cores"


def claim(cfg: DictConfig) -> CoreShare:
    """Work out this job's cores (module docstring), pin it under joblib and set torch's threads."""
    import torch

    cores = available_cores()
    launcher = _launcher()
    kind = launcher_kind(launcher)
    (share, reason), pinned, restore = launcher_share(launcher, len(cores)), None, {}
    if os.environ.get("SLURM_JOB_ID"):
        per_task = os.environ.get("SLURM_CPUS_PER_TASK")
        per_node = int(os.environ.get("SLURM_CPUS_ON_NODE", len(cores)))
        tasks = int(os.environ.get("SLURM_NTASKS_PER_NODE", "1"))
        share = int(per_task) if per_task else max(1, per_node // tasks)
        reason = "SLURM cpus_per_task"
    elif kind == "joblib":
        n_jobs = joblib_jobs(OmegaConf.select(launcher, "n_jobs"), len(cores))
        if n_jobs > len(cores):
            raise ConfigError(f"hydra.launcher.n_jobs={n_jobs}: more parallel jobs than the {len(cores)} CPU cores "
                              f"this sweep has; use hydra.launcher.n_jobs={len(cores)} or fewer")
        from hydra.core.hydra_config import HydraConfig

        slot, restore["lock"] = _claim_slot(str(HydraConfig.get().sweep.dir), n_jobs)
        pinned = cores[slot * share:(slot + 1) * share]
        restore["affinity"] = cores
        _pin(pinned)
    procs = local_processes(cfg)
    if procs > share and str(OmegaConf.select(cfg, "trainer.accelerator")) == "cpu":
        CoreShare(1, share, reason, pinned, restore).release()
        raise ConfigError(f"trainer.devices={procs}: this job was given {share} CPU core(s) ({reason}); "
                          f"use trainer.devices={share} or fewer, or fewer parallel jobs")
    setting = cfg.get("threads", "auto")
    threads = max(1, share // procs) if setting in (None, "auto") else int(setting)
    restore["threads"] = torch.get_num_threads()
    torch.set_num_threads(threads)
    return CoreShare(threads, share, reason, pinned, restore)
