"""Several search workers on one study: two ``python train.py -m hparams_search=optuna`` processes
with the same storage and study name (the default journal file in one sweep dir), started at once.

The test holds the study's ask lock while both start, and lets go only once each has said it is
waiting for it: from then on they ask at the same moment. Over a 2x2 grid with ``n_trials=6``
they end with exactly the grid's 4 trials, each point once, each trial in its own directory
written by one process, and both processes ran trials. While both train, a third look at the
study (the stale-trial rule a newly started worker applies) finds nothing to launch again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_metrics
from test_optuna import LOADED, SHAPE

from article_gpt.runs.dirs import OPTUNA_DB, OPTUNA_JOURNAL
from article_gpt.training.pruning import open_storage

WAITING = "to acquire the lock file"  # Optuna's journal lock says so after 10 s of waiting


def wait_for(done, procs: list[subprocess.Popen], timeout: float) -> bool:
    """Poll until ``done()`` (a file or a line the workers write), or a worker ended."""
    deadline = time.time() + timeout
    while not done() and all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.2)
    return done()


@pytest.fixture(scope="module")
def two_workers(module_cli):
    import optuna
    from optuna.storages.journal import JournalFileOpenLock

    from article_gpt.sweeps.optuna_sweeper import OptunaSweeperImpl
    from article_gpt.sweeps.optuna_workers import ask_lock

    _, env, outputs = module_cli
    sweep_dir = outputs / "shared"
    sweep_dir.mkdir(parents=True)
    journal = sweep_dir / OPTUNA_JOURNAL
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna", *SHAPE, "logger=none",
           "callbacks=none", "hydra.sweeper.sampler.name=grid", "model.heads=choice(2,4)",
           "optim.lr=choice(0.01,0.001)", "hydra.sweeper.n_trials=6", "hydra.sweeper.study_name=shared",
           f"hydra.sweep.dir={sweep_dir}", f"paths.log_dir={outputs}"]
    logs = [outputs / f"worker{i}.log" for i in range(2)]
    lock: JournalFileOpenLock = ask_lock(str(journal), sweep_dir)
    lock.acquire()  # both workers stop at it, before their first ask
    lock_file = Path(f"{sweep_dir / OPTUNA_JOURNAL}.ask.lock")
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log.open("w"),
                              stderr=subprocess.STDOUT) for log in logs]
    try:
        def both_waiting() -> bool:
            os.utime(lock_file)  # a live holder: a waiter breaks a lock left alone for 30 s
            return all(WAITING in log.read_text() for log in logs)

        waiting = wait_for(both_waiting, procs, LOADED)
        study = optuna.load_study(study_name="shared", storage=open_storage(str(journal)))  # made before any ask
        asked_while_held = len(study.trials)
        lock.release()
        jobs = [sweep_dir / "0" / "train.log", sweep_dir / "1" / "train.log"]
        wait_for(lambda: all(j.exists() for j in jobs), procs, LOADED)
        running = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))]
        relaunched = OptunaSweeperImpl(params={})._stale_trials(study, sweep_dir, {"val_loss": "minimize"})
        for p in procs:
            p.wait(timeout=LOADED)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log.read_text()[-3000:]
    return dict(sweep_dir=sweep_dir, waiting=waiting, asked_while_held=asked_while_held, running=running,
                relaunched=relaunched, pids={p.pid for p in procs})


@pytest.mark.slow
@pytest.mark.all_cores  # two search processes side by side
def test_two_workers_started_at_once_wait_for_one_lock(two_workers):
    assert two_workers["waiting"]  # both were at the ask lock at the same time
    assert not two_workers["asked_while_held"]  # and neither asked past it


@pytest.mark.slow
@pytest.mark.all_cores
def test_two_workers_ask_each_grid_point_once_into_their_own_dirs(two_workers):
    import optuna

    sweep_dir = two_workers["sweep_dir"]
    assert (sweep_dir / OPTUNA_JOURNAL).is_file() and not (sweep_dir / OPTUNA_DB).exists()  # the default storage
    trials = optuna.load_study(study_name="shared", storage=open_storage(str(sweep_dir / OPTUNA_JOURNAL))).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]  # n_trials=6 past a grid of 4: the grid, once
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2 and {int(w.rsplit("-", 1)[1]) for w in workers} == two_workers["pids"]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]  # no .optuna_workers
    for t in trials:  # each dir: one job, one process, the trial's own values
        m = read_metrics(sweep_dir / str(t.number))
        assert m["trial_number"] == t.number and m["resumes"] == [] and "attempts" not in m
        assert f"model.heads={t.params['model.heads']}" in m["overrides"]
        assert (sweep_dir / str(t.number) / "train.log").read_text().count("run dir:") == 1


@pytest.mark.slow
@pytest.mark.all_cores
def test_a_live_workers_running_trials_are_not_launched_again(two_workers):
    assert two_workers["running"]  # looked while trials ran in both processes
    assert two_workers["relaunched"] == []
