"""Several sweeper processes on one Optuna study: where the study lives, the lock they ask under,
and which of them are alive.

Two ``python train.py -m hparams_search=optuna`` processes with the same storage and study name
search together (Optuna's distributed search). Counting the study's trials and asking the next
must be one step for them all, or both would ask the last trial; a trial left RUNNING must be
told from one a live process runs, or a second process would launch it again into the same job
dir. No torch, no optuna at import.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from article_gpt.runs.dirs import OPTUNA_DB, OPTUNA_JOURNAL, is_database_url

log = logging.getLogger(__name__)
WORKERS = ".optuna_workers"  # in the sweep dir: one file per live sweeper process, held locked
WORKER_ATTR = "worker"  # trial user attribute: the sweeper process that launches it


class Worker:
    """This sweeper process, as its trials name it: a file in ``<sweep dir>/.optuna_workers`` that
    it holds locked while it lives (the kernel lets go when it dies, however it dies)."""

    def __init__(self, sweep_dir: Path) -> None:
        (sweep_dir / WORKERS).mkdir(exist_ok=True)
        self.sweep_dir, self.name = sweep_dir, f"{socket.gethostname()}-{os.getpid()}"
        self.path = sweep_dir / WORKERS / self.name
        draft = self.path.with_name(f".{self.name}")  # locked before it takes its name: never seen unlocked
        self.fd = os.open(draft, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(draft, self.path)

    @staticmethod
    def alive(sweep_dir: Path, name: str | None) -> bool:
        try:
            fd = os.open(sweep_dir / WORKERS / str(name), os.O_RDWR)
        except (FileNotFoundError, NotADirectoryError):
            return False  # no name (a trial of an older sweeper) or a worker that ended
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        """Let go, and clear the files of workers that were killed; the last one out leaves no folder."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        for other in self.path.parent.glob("[!.]*"):  # not a draft, which is not locked yet
            if not self.alive(self.sweep_dir, other.name):
                other.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass  # another worker still runs


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """``hydra.sweeper.storage`` if given (a database URL, or a journal file's path, made absolute
    for the jobs); else the sweep dir's optuna.db where one exists, else its journal file."""
    if storage:
        return str(storage) if is_database_url(str(storage)) else str(Path(str(storage)).expanduser().resolve())
    db = sweep_dir / OPTUNA_DB
    return f"sqlite:///{db}" if db.is_file() else str(sweep_dir / OPTUNA_JOURNAL)


def ask_lock(url: str, sweep_dir: Path):
    """The lock every sweeper process on this study counts and asks under: a file beside a journal
    or SQLite file; for a database server, in the sweep dir (its workers share that dir)."""
    from optuna.storages.journal import JournalFileOpenLock

    if not is_database_url(url):
        base = url
    elif url.startswith("sqlite:///"):
        base = url.removeprefix("sqlite:///")
    else:
        base = str(sweep_dir / "optuna")
    return JournalFileOpenLock(base + ".ask")


def locked(lock, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` holding ``lock`` (an Optuna journal file lock)."""
    lock.acquire()
    try:
        return fn(*args)
    finally:
        lock.release()


def wait_for_others(study, sweep_dir: Path, worker: Worker) -> None:
    """Nothing is left to ask: wait while other live workers still run trials in this sweep dir,
    so that each worker's summary, written next, counts every trial and none as missing."""
    import time

    from optuna.trial import TrialState

    said = False
    while others := [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if t.user_attrs.get("sweep_dir") == str(sweep_dir) and t.user_attrs.get(WORKER_ATTR) != worker.name
                     and Worker.alive(sweep_dir, t.user_attrs.get(WORKER_ATTR))]:
        if not said:
            log.info(f"Optuna: every trial asked; waiting for trials {others}, which other workers run")
            said = True
        time.sleep(1)
