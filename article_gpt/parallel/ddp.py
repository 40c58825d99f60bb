"""DDP that works in a single run and inside a sweep (``trainer=ddp``).

Lightning's DDP launcher starts the other ranks by re-running ``sys.argv``. Under
``python train.py -m ...`` that is the whole sweep: every rank would launch every job again.
``JobDDPStrategy`` starts them from *this job's* own overrides instead, as a single run into
the job's directory (``python train.py <job overrides> hydra.run.dir=<job dir>``), so a job
of any sweep, on any launcher, gets exactly its ``devices`` processes. Under SLURM the ranks
are SLURM tasks (``tasks_per_node: ${trainer.devices}``): Lightning reads them from SLURM and
starts nothing, and this module only has to know which rank it is in.

Sweeps run job after job in one process, which plain Lightning never expects: ``end_job``
closes what a DDP job leaves behind (its rank processes, the process group, the rank
variables in ``os.environ``), so the next job starts clean, whether this one finished or
failed. A rank that dies does not take the job's process (the sweep) with it: the other
ranks are stopped and rank 0 fails on its next collective, and the job is recorded as failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

# What a DDP launch writes into the launching process's environment.
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def is_rank_zero(env: dict[str, str] | None = None) -> bool:
    """Whether this process is global rank 0, known before the Trainer exists: set by torchrun
    (RANK), by a DDP launch (LOCAL_RANK, NODE_RANK) or by SLURM (SLURM_PROCID, one task per rank)."""
    env = os.environ if env is None else env
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"]) == 0 and int(env.get("NODE_RANK", "0")) == 0
    return int(env.get("SLURM_PROCID", "0")) == 0


def rank_label(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("RANK") or env.get("LOCAL_RANK") or env.get("SLURM_PROCID") or "0"


def job_command() -> tuple[list[str], str]:
    """``python train.py`` with this job's own overrides, as a single run into this job's
    directory (no ``-m``), and the folder to start it in."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    root = Path(os.environ.get("ARTICLE_GPT_ROOT") or Path(__file__).resolve().parents[2])
    command = [sys.executable, str(root / "train.py")]
    if hc.job.config_name and hc.job.config_name != "train":
        command.append(f"--config-name={hc.job.config_name}")
    command += list(hc.overrides.task)
    # the rank's config is the job's; only where Hydra writes differs (rank 0 owns .hydra/), and
    # it is one run even where the job's config makes every start a sweep (hparams_search=optuna)
    command += [f'hydra.run.dir="{hc.runtime.output_dir}"', "hydra.output_subdir=null", "hydra.mode=RUN"]
    return command, str(root)


class _RankWatcher(threading.Thread):
    """Watches the started ranks. If one exits with an error, the others are stopped and the
    launching process is left to fail on its next collective (Lightning's own watcher would
    SIGKILL the launching process, and with it a whole sweep)."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        super().__init__(daemon=True, name="ddp-rank-watcher")
        self.procs = procs
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            codes = [p.poll() for p in self.procs]
            if all(c == 0 for c in codes):
                return
            if any(c not in (None, 0) for c in codes):
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                return


class JobLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher, starting each extra rank from ``job_command()``."""

    def launch(self, function, *args, trainer=None, **kwargs):
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            self.watcher = _RankWatcher(self.procs)
            self.watcher.start()
        # torch threads were set per rank by article_gpt.parallel.cores: nothing to change here
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        command, cwd = job_command()
        self.procs = [
            subprocess.Popen([*command, f"hydra.job.name=train_rank{rank}"], cwd=cwd,
                             env={**os.environ, "LOCAL_RANK": str(rank)})
            for rank in range(1, self.num_processes)
        ]


class JobDDPStrategy(DDPStrategy):
    """DDP (gloo on CPU, NCCL on CUDA) whose extra ranks run this job's config, not ``sys.argv``."""

    strategy_name = "article_gpt_ddp"

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def process_dataloader(self, dataloader):
        """The training order stays the loader's own sampler's (article_gpt/data/resumable.py:
        drawn from the seed and epoch, re-entered mid-epoch by a resume). Lightning wraps it in
        a DistributedSampler that would shuffle it again by position; unshuffled, rank r takes
        positions r, r + world_size, ..., so the steps trained are a prefix of the order, which
        is what a resumed run skips."""
        sampler = getattr(dataloader, "sampler", None)
        if isinstance(sampler, DistributedSamplerWrapper):
            sampler.shuffle = False
        return super().process_dataloader(dataloader)


def rank_environment() -> dict[str, str | None]:
    """The rank variables as they are before a job: ``end_job`` puts them back."""
    return {k: os.environ.get(k) for k in RANK_VARIABLES}


def end_job(trainer, before: dict[str, str | None], failed: bool, grace_s: float = 60.0) -> None:
    """Close what a DDP job leaves in this process, so the next job of a sweep starts clean.

    The other ranks get ``grace_s`` to finish (they end with rank 0) or none when the job failed
    (they would wait in a collective for rank 0 forever); then the process group is destroyed
    and the rank variables restored. Never raises: it runs in the job's closing path."""
    try:
        launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
        procs = list(getattr(launcher, "procs", None) or [])
        watcher = getattr(launcher, "watcher", None)
        if watcher is not None:
            watcher.stopped.set()
        deadline = time.monotonic() + (0 if failed else grace_s)
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception as err:  # the job's record matters more than a clean teardown
        print(f"ddp: cleanup after the job failed ({type(err).__name__}: {err})", file=sys.stderr)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
