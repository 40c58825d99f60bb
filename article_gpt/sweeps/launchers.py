"""The launchers of conf/hydra/launcher/: Hydra's joblib and submitit plugins, except that a job
whose process dies outright (SIGKILL, the OOM killer, a segfault) is recorded and the sweep goes on.

Hydra's sweepers read every job's return value; the plugins raise instead where a job left none,
which ends the sweep before its summary: loky's ``TerminatedWorkerError`` (loky then kills every
other worker, and the jobs running there), or submitit's ``UncompletedJobError`` from
``job.results()``. Here:

- joblib: each job runs in a process forked from its loky worker, which inherits the worker's
  imports (paid once per worker, not per job); the worker waits for it and reads how it ended,
  so a job's death never breaks the pool;
- submitit (local, SLURM): each job's result is read on its own.

A dead job gets a record (metrics.json, ``status: failed``) that says how it ended, the signal or
the exit code, over what an earlier attempt recorded; a job that wrote its own record before it
exited keeps it. It returns NaN, as a failed job does (training/run.py).

Ctrl-C or SIGTERM to a joblib sweep's process group: the running jobs stop at the end of their
step (their own handler, recovery/signals.py) and record ``interrupted``; the jobs not started
are recorded ``interrupted`` without starting; the summary is written and the sweep exits
128 + signum. ``resume_sweep=<sweep dir>`` completes it. A second signal stops at once.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_joblib_launcher import joblib_launcher
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from article_gpt.runs import dirs, record
from article_gpt.runs.record import RecordError, RunRecord, Status
from article_gpt.sweeps import callbacks
from article_gpt.training.context import short_name, swept_overrides

log = logging.getLogger(__name__)
STOPPING = ".stopping"  # in the sweep dir once a joblib sweep is signalled: no job starts after it
STOPS = (signal.SIGINT, signal.SIGTERM)


def how_it_ended(code: int) -> tuple[Status, str]:
    """A dead job's status and one line, from its process's exit code (negative: the signal)."""
    if code < 0:
        name = signal.Signals(-code).name
        why = {"SIGKILL": " (the kernel's OOM killer sends it too: see dmesg)",
               "SIGSEGV": " (a crash in native code)"}.get(name, "")
        return Status.FAILED, f"the job's process was killed by {name}{why}"
    if code - 128 in STOPS:
        return Status.INTERRUPTED, f"{signal.Signals(code - 128).name} received before the run began"
    return Status.FAILED, f"the job's process exited with code {code} and left no result"


def record_death(job_dir: Path, sweep_dir: Path, overrides: Sequence[str], status: Status, error: str,
                 since: float, detail: str = "") -> None:
    """The record of a job that left no result (module doc); a record the job itself wrote after
    ``since`` (the attempt's start) is its own word and stays."""
    file = record.path(job_dir)
    if file.exists() and file.stat().st_mtime >= since:
        return
    try:
        old = record.read(job_dir)
    except RecordError:
        old = None
    identity = {"run_dir": str(job_dir), "group": sweep_dir.name, "overrides": list(overrides),
                "name": short_name(swept_overrides(list(overrides), sweep_dir)) or job_dir.name}
    rec = replace(old, status=status, error=error, **identity) if old else RunRecord(status, error, **identity)
    job_dir.mkdir(parents=True, exist_ok=True)
    record.write(job_dir, rec)
    if status is Status.FAILED:
        (job_dir / dirs.ERROR_LOG).write_text(f"{error}\n{detail}")
    print(f"{job_dir}: {error}", file=sys.stderr, flush=True)


def no_result(overrides: Sequence[str], job_dir: Path) -> JobReturn:
    """What the sweeper gets for a job that left no result: NaN, as for a failed job."""
    return JobReturn(overrides=list(overrides), working_dir=str(job_dir), status=JobStatus.COMPLETED,
                     _return_value=math.nan)


def job_config(hydra_context: Any, config: DictConfig, overrides: Sequence[str], idx: int,
               job_id: str) -> tuple[DictConfig, Path]:
    """The job's config, as the plugins compose it, and its directory."""
    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id, cfg.hydra.job.num = job_id, idx
    return cfg, Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


# ---------------------------------------------------------------- joblib


def run_forked(idx: int, overrides: list[str], hydra_context: Any, config: DictConfig, task_function: Any,
               singleton_state: dict, stopping: Path) -> JobReturn:
    """In a loky worker: run one job in a forked process and return what it returned, or NaN
    with the job recorded (module doc)."""
    setup_globals()
    Singleton.set_state(singleton_state)
    cfg, job_dir = job_config(hydra_context, config, overrides, idx, f"{config.hydra.job.name}_{idx}")
    sweep_dir = Path(str(cfg.hydra.sweep.dir))
    HydraConfig.instance().set_config(cfg)
    if stopping.exists():  # the sweep was stopped before this job began
        name = stopping.read_text().strip() or "a signal"
        record_death(job_dir, sweep_dir, overrides, Status.INTERRUPTED,
                     f"not started: the sweep was stopped by {name}", math.inf)
        return no_result(overrides, job_dir)
    import article_gpt.training.run  # noqa: F401  (torch, Lightning: loaded once by the worker, inherited by each job)

    since = time.time()
    read_end, write_end = os.pipe()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the job's; the worker reports it
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _the_job(write_end, hydra_context, task_function, cfg)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, wait_status = os.waitpid(pid, 0)
    signal.signal(signal.SIGINT, previous)
    code = os.waitstatus_to_exitcode(wait_status)
    if data and code == 0:
        return pickle.loads(data)
    record_death(job_dir, sweep_dir, overrides, *how_it_ended(code), since)
    return no_result(overrides, job_dir)


def _the_job(write_end: int, hydra_context: Any, task_function: Any, cfg: DictConfig) -> NoReturn:
    """The forked job: runs, sends its JobReturn down ``write_end`` and exits, never returning
    into the loky worker it was forked from."""
    import cloudpickle  # joblib's and submitit's own dependency

    signal.signal(signal.SIGINT, signal.default_int_handler)
    callbacks.in_a_job_process()
    code = 1
    try:
        ret = run_job(hydra_context=hydra_context, task_function=task_function, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        with os.fdopen(write_end, "wb") as f:  # cloudpickle, as joblib: a config's dataclasses by value
            cloudpickle.dump(ret, f)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # not the worker's exit path: its atexit handlers are the worker's


class _Stop:
    """The sweep's first SIGINT/SIGTERM: no job starts after it (the running ones have the signal
    too, in the same process group); a second one stops at once."""

    def __init__(self, file: Path) -> None:
        self.file, self.signum = file, None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.file.write_text(signal.Signals(signum).name)
        print(f"\n{signal.Signals(signum).name}: the running jobs stop at the end of their step and no new job "
              f"starts; the summary follows (send it again to stop at once)", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signal(sweep_dir: Path) -> Iterator[_Stop]:
    stop = _Stop(sweep_dir / STOPPING)
    stop.file.unlink(missing_ok=True)
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in STOPS} if main else {}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.file.unlink(missing_ok=True)


class JoblibLauncher(joblib_launcher.JoblibLauncher):
    """hydra/launcher=joblib: Hydra's joblib launcher, each job in a process of its own (module doc)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
        from joblib import Parallel, delayed

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        settings = {**self.joblib, "backend": "loky"}  # as the plugin: threads do not work with Hydra
        process_joblib_cfg(settings)
        log.info(f"Joblib.Parallel({settings}) is launching {len(job_overrides)} jobs into {sweep_dir}")
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        state = Singleton.get_state()
        with stop_on_signal(sweep_dir) as stop:
            runs = Parallel(**settings)(
                delayed(run_forked)(idx, list(overrides), self.hydra_context, self.config, self.task_function,
                                    state, stop.file)
                for idx, overrides in enumerate(job_overrides, initial_job_idx))
        if stop.signum is not None:
            callbacks.summarize_interrupted_sweep(sweep_dir)
            raise SystemExit(128 + stop.signum)
        return runs


# ---------------------------------------------------------------- submitit


class _Submitit:
    """The plugin's launch up to its jobs, then each job's result read on its own."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
                                         if "max_num_timeout" in self.params else {})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        params = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        since = time.time()
        jobs = executor.map_array(self, *zip(*params, strict=True))
        return [self._result(job, p[0], p[2], sweep_dir, since) for job, p in zip(jobs, params, strict=True)]

    def _result(self, job: Any, overrides: list[str], idx: int, sweep_dir: Path, since: float) -> JobReturn:
        from submitit.core.utils import UncompletedJobError

        if _wait(job) or job.paths.result_pickle.exists():
            try:
                return job.results()[0]
            except UncompletedJobError:  # no result: the job's process died
                pass
        detail = "\n".join((job.stderr() or "").strip().splitlines()[-40:])  # e.g. srun: task 0: Killed
        _, job_dir = job_config(self.hydra_context, self.config, overrides, idx, str(job.job_id))
        # submitit knows a state, not the task's signal (its local controller exits 0 either way)
        error = f"the job's process died and left no result (submitit job {job.job_id}, state {job.state})"
        record_death(job_dir, sweep_dir, overrides, Status.FAILED, error, since, detail)
        return no_result(overrides, job_dir)


def _wait(job: Any) -> bool:
    """Until the job has ended: True where submitit knows it did. submitit learns a SLURM job's
    end from sacct, which on a cluster without accounting ("accounting storage is disabled")
    answers UNKNOWN forever: there a job that left no result has ended once squeue no longer
    lists it (False)."""
    import subprocess

    while not job.done():
        if job.state.upper() == "UNKNOWN" and job.__class__.__name__ == "SlurmJob":
            queued = subprocess.run(["squeue", "-h", "-j", str(job.job_id), "-o", "%T"], capture_output=True,
                                    text=True, timeout=60)
            gone = queued.returncode == 0 and not queued.stdout.strip() or "Invalid job id" in queued.stderr
            if gone and not job.done():
                return False
        time.sleep(2)  # as submitit's own wait, which asks the scheduler at most every few seconds
    return True


class LocalLauncher(_Submitit, submitit_launcher.LocalLauncher):
    """hydra/launcher=submitit_local (module doc)."""


class SlurmLauncher(_Submitit, submitit_launcher.SlurmLauncher):
    """hydra/launcher=submitit_slurm (module doc)."""
