"""The Optuna search: ``python train.py -m hparams_search=optuna`` in real subprocesses.

A 4-trial grid over a good and a hopeless learning rate (1e-7: the loss does not move) with
the median pruner: every trial runs, the hopeless ones are pruned at their first validation,
and the best is reported. A search stopped after 2 trials (run side by side by the joblib launcher), then killed with
SIGKILL in the middle of a trial, and run again ends with exactly the trials asked for, none
asked twice.
A search space naming a key the config lacks stops with one line before anything is written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, read_metrics, wandb_inspect

from article_gpt.runs.dirs import OPTUNA_JOURNAL

# no sanity pass, one validation batch, no samples: pruning needs only the val loss after each epoch
SHAPE = [a for a in TINY if not a.startswith(("model.heads=", "sample."))] + [
    "model.num_layers=1", "sample.max_new_tokens=0", "trainer.num_sanity_val_steps=0", "trainer.limit_val_batches=1"]
GOOD, BAD = 0.01, 1e-7
# prune from the first validation, once one trial has finished: the debug trainer validates twice
LOADED = 900  # seconds a whole search may take on a machine shared with other heavy work
PRUNE_EARLY = ["hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0"]


def study_trials(sweep_dir: Path):
    """The trials of the sweep's study, in the journal file every search keeps by default."""
    import optuna

    from article_gpt.training.pruning import open_storage

    storage = open_storage(str(sweep_dir / OPTUNA_JOURNAL))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


def job_dirs(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def search(module_cli):
    run, env, outputs = module_cli
    sweep_dir = outputs / "search"
    proc = run("train.py", "-m", "hparams_search=optuna", *SHAPE, *PRUNE_EARLY, "hydra.sweeper.n_trials=4",
               "hydra.sweeper.sampler.name=grid", "model.heads=choice(2,4)", f"optim.lr=choice({GOOD},{BAD})",
               f"hydra.sweep.dir={sweep_dir}", timeout=LOADED)
    return proc, env, sweep_dir


@pytest.mark.slow
def test_search_runs_n_trials_and_reports_the_best(search):
    import optuna

    from article_gpt.training.pruning import open_storage

    proc, _, sweep_dir = search
    trials = study_trials(sweep_dir)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state.is_finished() for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # the whole grid, each point once
    assert job_dirs(sweep_dir) == ["0", "1", "2", "3"]
    for t in trials:  # each job trained exactly what its trial asked
        m = read_metrics(sweep_dir / str(t.number))
        assert m["trial_number"] == t.number
        assert f"optim.lr={t.params['optim.lr']!r}" in m["overrides"]
        assert f"model.heads={t.params['model.heads']}" in m["overrides"]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(done, key=lambda t: t.value)
    assert best.params["optim.lr"] == GOOD
    assert best.value == pytest.approx(read_metrics(sweep_dir / str(best.number))["val_loss"])
    recorded = optuna.load_study(study_name=sweep_dir.name, storage=open_storage(str(sweep_dir / OPTUNA_JOURNAL)))
    assert recorded.best_trial.number == best.number
    summary = (sweep_dir / "summary.md").read_text()
    assert f"Best trial {best.number}: " in summary and "## Search" in summary
    assert (sweep_dir / "history.png").stat().st_size > 0
    assert f"Optuna: best trial {best.number}: val_loss={best.value:.4f}" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_hopeless_trial_is_pruned_and_finishes_cleanly(search):
    import optuna

    proc, env, sweep_dir = search
    trials = study_trials(sweep_dir)
    first_done = min(t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    later_bad = [t for t in trials if t.params["optim.lr"] == BAD and t.number > first_done]
    assert later_bad, "the grid order puts a hopeless trial after a finished one (seed 0)"
    for t in later_bad:
        assert t.state == optuna.trial.TrialState.PRUNED
        m = read_metrics(sweep_dir / str(t.number))
        assert m["status"] == "pruned" and m["error"] is None and m["pruned_at_validation"] == 0
        assert m["steps"] == 3  # stopped after its first epoch of 3 batches (6 without pruning)
        final = wandb_inspect(sweep_dir / str(t.number), env, summary=True)
        assert final["state"] == "finished" and final["exit_code"] == 0 and final["summary"]["status"] == "pruned"
    rows = [line for line in (sweep_dir / "summary.md").read_text().splitlines() if line.startswith("| ")]
    statuses = {row.split(" | ")[0].strip("| "): row for row in rows[1:]}
    assert all("| pruned |" in statuses[str(t.number)] for t in later_bad)
    assert "failed" not in proc.stderr  # pruned trials are no failures: exit status 0 (run() checked it)


@pytest.mark.slow
@pytest.mark.all_cores  # 2 joblib jobs side by side
def test_stopped_and_killed_search_continues_without_repeating_trials(module_cli):
    run, env, outputs = module_cli
    sweep_dir = outputs / "resumed"
    args = ["-m", "hparams_search=optuna", *SHAPE, "logger=none", "callbacks=none", "hydra.sweeper.sampler.name=random",
            "model.heads=choice(2,4)", f"hydra.sweep.dir={sweep_dir}",
            f"paths.log_dir={outputs}"]  # run() adds this last one itself
    # the first 2 trials in one batch, side by side in joblib's worker processes
    run("train.py", *args[:-1], "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", timeout=LOADED)
    assert job_dirs(sweep_dir) == ["0", "1"]
    first = {t.number: t.params for t in study_trials(sweep_dir)}

    # the same search asked for 4 trials, killed hard while trial 2 trains
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "hydra.sweeper.n_trials=4"], cwd=ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + LOADED
    while not (sweep_dir / "2" / "train.log").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (sweep_dir / "2" / "metrics.json").exists(), "trial 2 had finished: the kill came too late"
    states = {t.number: t.state.name for t in study_trials(sweep_dir)}
    assert states[2] == "RUNNING"

    out = run("train.py", *args[:-1], "hydra.sweeper.n_trials=4", timeout=LOADED)
    trials = study_trials(sweep_dir)
    assert [t.number for t in trials] == [0, 1, 2, 3]  # 4 in total: none asked twice, none missing
    assert all(t.state.is_finished() for t in trials)
    assert {n: p for n, p in ((t.number, t.params) for t in trials) if n < 2} == first
    assert job_dirs(sweep_dir) == ["0", "1", "2", "3"]
    for t in trials:
        m = read_metrics(sweep_dir / str(t.number))
        assert m["trial_number"] == t.number and m["status"] in ("completed", "pruned")
        assert f"model.heads={t.params['model.heads']}" in m["overrides"]
    assert "trials [2] were left running" in out.stdout + out.stderr
    text = (sweep_dir / "summary.md").read_text()
    rows = text[text.index("\n| job"):].strip().split("\n\n")[0].splitlines()  # the runs table, not the later ones
    assert sorted(row.split(" | ")[0].strip("| ") for row in rows[2:]) == ["0", "1", "2", "3"]  # one row a trial


@pytest.mark.parametrize("args, line", [
    (["model.hedas=choice(2,4)"], "error: model.hedas=choice(2,4): no such config key"),
    (["hydra.sweeper.sampler.name=grid"], "error: hydra.sweeper.sampler.name=grid: optim.lr is an interval"),
    (["model=choice(tiny,huge)"], "error: model=choice(tiny,huge): model=huge is not a config of group model"),
])
def test_bad_search_space_is_one_line(run_cli, outputs, args, line):
    proc = run_cli("train.py", "-m", "hparams_search=optuna", *SHAPE, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
    assert proc.stderr.startswith(line), proc.stderr
    assert not list(outputs.glob("sweeps/*"))  # no sweep folder: nothing that looks like a search


def test_search_space_from_hydra_sweep_syntax() -> None:
    import optuna.distributions as D
    from omegaconf import OmegaConf

    from article_gpt.sweeps import search_space
    from article_gpt.training import pruning

    config = OmegaConf.create({"model": {"heads": 4, "block_size": 64, "num_layers": 2}, "optim": {"lr": 1e-3}})
    params = {"model.heads": "choice(2,4,8)", "model": {"block_size": "range(16,129,16)"},
              "optim.lr": "tag(log, interval(1e-4, 3e-3))", "model.num_layers": "tag(int, interval(1, 6))"}
    space = search_space.parse(params, ["model.heads=4,8", "model.num_layers=3"], config, None)
    assert space.dims["model.heads"].distribution == D.CategoricalDistribution([4, 8])  # the command line wins
    assert space.dims["model.block_size"].distribution == D.IntDistribution(16, 128, step=16)
    assert space.dims["optim.lr"].distribution == D.FloatDistribution(1e-4, 3e-3, log=True)
    assert "model.num_layers" not in space.dims and space.fixed == ["model.num_layers=3"]  # fixed, not searched
    assert space.overrides({"model.heads": 8, "optim.lr": 0.00125}) == [
        "model.num_layers=3", "model.heads=8", "optim.lr=0.00125"]
    for name in pruning.PRUNER_OPTIONS:  # every pruner builds from the sweeper's config
        pruner = {"name": name, "n_startup_trials": 2, "n_warmup_steps": 2, "min_resource": 1,
                  "max_resource": "auto", "reduction_factor": 3}
        assert pruning.build_pruner(pruning.pruner_spec(pruner)) is not None


def sweeper_from_config(*overrides: str, sweep: tuple[str, ...] = ()):
    """The sweeper as Hydra builds it from conf/ (a real compose), and its search space with the
    command line's ``sweep`` arguments."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from article_gpt.sweeps import search_space
    from article_gpt.sweeps.optuna_sweeper import OptunaSweeperImpl

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    options = {k: v for k, v in OmegaConf.to_container(cfg.hydra.sweeper, resolve=True).items() if k != "_target_"}
    sweeper = OptunaSweeperImpl(**options)
    return sweeper, search_space.parse(sweeper.params, list(sweep), cfg, None)


def test_tpe_is_built_with_the_settings_chosen_for_parallel_batches() -> None:
    """conf/hydra/sweeper/optuna.yaml sets TPE's multivariate and constant_liar on purpose: the
    sampler built has them, for several objectives too, where Optuna 5's default differs."""
    import optuna

    sweeper, space = sweeper_from_config("hparams_search=optuna")
    sampler = sweeper._sampler(space)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert (sampler._multivariate, sampler._constant_liar, sampler._n_startup_trials) == (True, True, 10)
    two = optuna.create_study(directions=["minimize", "maximize"])
    assert sampler._is_multivariate(two) and not optuna.samplers.TPESampler()._is_multivariate(two)
    pareto, space = sweeper_from_config("hparams_search=optuna_pareto")
    assert pareto._sampler(space)._is_multivariate(two) and pareto._sampler(space)._constant_liar


def test_each_trial_number_has_its_own_seed_and_the_grid_one_order() -> None:
    """Two workers (or a continued search) asking trials 0 and 1 do not draw the same start-up
    point; trial N asks the same values every time; every worker walks the grid in one order."""
    import optuna

    sweeper, space = sweeper_from_config("hparams_search=optuna")

    def first_ask(number: int, s=sweeper) -> dict:
        return optuna.create_study(sampler=s._sampler(space, number)).ask(space.distributions).params

    assert first_ask(0) == first_ask(0) and first_ask(0) != first_ask(1)
    grid, space = sweeper_from_config("hparams_search=optuna", "hydra.sweeper.sampler.name=grid",
                                      sweep=("optim.lr=1e-3",))
    assert grid._sampler(space, 0)._all_grids == grid._sampler(space, 7)._all_grids


def test_storage_is_the_sweep_dirs_journal_unless_given_and_an_old_db_goes_on(tmp_path, monkeypatch) -> None:
    from article_gpt.runs.dirs import OPTUNA_DB
    from article_gpt.sweeps.optuna_workers import storage_url

    assert storage_url(None, tmp_path) == str(tmp_path / OPTUNA_JOURNAL)
    assert storage_url("postgresql://u@host/optuna", tmp_path) == "postgresql://u@host/optuna"
    monkeypatch.chdir(tmp_path)
    assert storage_url("shared.log", tmp_path / "elsewhere") == str(tmp_path / "shared.log")  # absolute, for jobs
    (tmp_path / OPTUNA_DB).write_bytes(b"")
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path / OPTUNA_DB}"  # a sweep started before the journal
