"""Checks of a config against the machine it runs on: its devices and cores, and folders it can
write. Importing this is cheap (no torch): torch loads only to count GPUs a config asks for.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from article_gpt.errors import ConfigError


def validate_devices(cfg: DictConfig) -> None:
    """The devices ``trainer`` asks for exist here, and several run under trainer=ddp."""
    _validate_accelerator(cfg)
    _validate_parallel(cfg)


def requested_devices(devices: Any) -> list[int] | int | None:
    """``trainer.devices`` as a count (int) or explicit indices (list); None for auto / -1 (all)."""
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        parts = [p for p in devices.split(",") if p.strip()]
        return [int(p) for p in parts] if "," in devices else int(parts[0])
    if OmegaConf.is_list(devices) or isinstance(devices, list):
        return [int(i) for i in devices]
    return devices if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0 else None


def _validate_accelerator(cfg: DictConfig) -> None:
    """Devices the machine does not have. torch loads only for GPUs: CPU runs check cores."""
    precision = str(cfg.trainer.precision)
    accel = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    devices = OmegaConf.select(cfg, "trainer.devices")
    wanted = requested_devices(devices)
    if accel == "cpu" and isinstance(wanted, int):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if wanted > cores:  # each CPU device is a process of its own: more than cores only thrashes
            raise ConfigError(f"trainer.devices={devices}: this machine gives this job {cores} CPU cores; "
                              f"use at most trainer.devices={cores}")
    if accel in ("gpu", "cuda"):
        import torch  # only here: a CPU run's config is checked before torch loads

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"trainer.accelerator={accel}: no CUDA device on this machine; use trainer=cpu")
        highest = max(wanted) + 1 if isinstance(wanted, list) else wanted or 0
        if highest > count:
            raise ConfigError(f"trainer.devices={devices}: this machine has {count} CUDA device(s); "
                              f"use trainer.devices={count} or fewer")
    if accel == "cpu" and precision.startswith("bf16"):
        warnings.warn(
            f"trainer.precision={precision} on CPU: without native bf16 (AVX-512 BF16/AMX) this is "
            "10-100x slower than 32-true", stacklevel=2)


def _validate_parallel(cfg: DictConfig) -> None:
    """Several devices need ``trainer=ddp``: Lightning's own DDP launcher starts the other ranks by
    re-running the command line, which under ``-m`` is the whole sweep (article_gpt/parallel/ddp.py)."""
    devices = OmegaConf.select(cfg, "trainer.devices")
    wanted = requested_devices(devices)  # auto / -1: Lightning's choice, one process on CPU
    count = len(wanted) if isinstance(wanted, list) else wanted or 1
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if count > 1 and (strategy is None or isinstance(strategy, str)):
        raise ConfigError(f"trainer.devices={devices}: more than one device needs trainer=ddp "
                          f"(e.g. trainer=ddp trainer.devices={count})")
    if str(OmegaConf.select(cfg, "trainer.accelerator")) == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.accelerator=mps: no Apple-silicon GPU (MPS) on this machine; use trainer=cpu")


def validate_nodes(cfg: DictConfig, hydra: DictConfig) -> None:
    """A DDP job has ``trainer.num_nodes`` x ``trainer.devices`` ranks. Under SLURM each rank is a
    task: the launcher's ``nodes`` and ``tasks_per_node`` must be exactly those (they follow the
    trainer's keys unless set, conf/hydra/launcher/submitit_slurm.yaml). A launcher without nodes
    starts no other node's ranks: rank 0 would wait for them forever."""
    nodes = OmegaConf.select(cfg, "trainer.num_nodes") or 1
    launcher = OmegaConf.select(hydra, "launcher") or {}
    if "nodes" not in launcher:
        if nodes != 1:
            raise ConfigError(f"trainer.num_nodes={nodes}: more than one node needs hydra/launcher=submitit_slurm")
        return
    checks = [("nodes", "trainer.num_nodes", nodes)]
    if str(launcher.get("_target_", "")).endswith("SlurmLauncher"):  # elsewhere trainer=ddp starts the ranks
        checks.append(("tasks_per_node", "trainer.devices", OmegaConf.select(cfg, "trainer.devices")))
    for key, *want in checks:
        value = launcher.get(key)
        if isinstance(want[1], int) and value != want[1]:
            raise ConfigError(f"hydra.launcher.{key}={value}: must equal {want[0]}={want[1]} (one SLURM task "
                              f"per DDP rank); leave hydra.launcher.{key} unset to follow {want[0]}")


def check_writable(key: str, value: Any, folder: Path) -> None:
    """``folder`` (created if missing) takes a file: a read-only or full disk is one line now,
    before Hydra makes a run directory there, not a traceback later or a half-written run."""
    probe = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{key}={value}: cannot be written ({reason}); choose a writable folder") from None
    finally:
        if probe is not None:
            os.unlink(probe)
