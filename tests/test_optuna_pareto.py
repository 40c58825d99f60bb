"""A multi-objective search: ``python train.py -m hparams_search=optuna_pareto``.

Two trials on val loss against tokens/s, with a pruner asked for on the command line: the
search says in one line at its start that it cannot prune, no trial reports or is pruned, each
trial is told the values its record holds, and the summary and ``best_trial.yaml`` list exactly
the trials no other trial beats on both (worked out here from the records), drawn in pareto.png.
Objectives that are not numeric record keys stop the search in one line before anything is written.
"""

from __future__ import annotations

import pytest
from conftest import read_metrics
from omegaconf import OmegaConf
from test_optuna import LOADED, SHAPE

from article_gpt.runs.dirs import OPTUNA_JOURNAL

NO_PRUNING = "Optuna cannot prune multi-objective trials (optuna#3450): this search runs without pruning"


@pytest.fixture(scope="module")
def pareto_search(module_cli):
    run, env, outputs = module_cli
    sweep_dir = outputs / "pareto"
    proc = run("train.py", "-m", "hparams_search=optuna_pareto", *SHAPE, "logger=none", "callbacks=none",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.name=random", "hydra.sweeper.pruner.name=median",
               "model.heads=choice(1,2,4)", f"hydra.sweep.dir={sweep_dir}", timeout=2 * LOADED)  # nothing pruned
    return proc, sweep_dir


def dominated(a: dict, b: dict) -> bool:
    """b beats a: no worse on both (lower loss, higher tokens/s), better on one."""
    no_worse = b["val_loss"] <= a["val_loss"] and b["tokens_per_sec"] >= a["tokens_per_sec"]
    return no_worse and (b["val_loss"], b["tokens_per_sec"]) != (a["val_loss"], a["tokens_per_sec"])


@pytest.mark.slow
def test_pareto_search_tells_both_objectives_and_lists_the_front(pareto_search):
    import optuna

    from article_gpt.training.pruning import open_storage

    proc, sweep_dir = pareto_search
    out = proc.stdout + proc.stderr
    assert out.count(NO_PRUNING) == 1 and out.index(NO_PRUNING) < out.index("#0 : ")  # said once, at the start
    assert "could not report" not in out
    study = optuna.load_study(study_name=sweep_dir.name, storage=open_storage(str(sweep_dir / OPTUNA_JOURNAL)))
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    assert [t.number for t in study.trials] == [0, 1]
    records = {}
    for t in study.trials:
        m = read_metrics(sweep_dir / str(t.number))
        assert t.state == optuna.trial.TrialState.COMPLETE and m["status"] == "completed"
        assert m.get("pruned_at_validation") is None and t.intermediate_values == {}  # nothing reported
        assert t.values == [m["val_loss"], m["tokens_per_sec"]]
        records[t.number] = m
    front = sorted(n for n, m in records.items() if not any(dominated(m, o) for o in records.values()))
    assert sorted(t.number for t in study.best_trials) == front
    best = OmegaConf.load(sweep_dir / "best_trial.yaml")
    assert dict(best.objectives) == {"val_loss": "minimize", "tokens_per_sec": "maximize"}
    assert sorted(p.number for p in best.pareto) == front
    summary = (sweep_dir / "summary.md").read_text()
    part = summary[summary.index("## Pareto front"):]
    rows = [line for line in part.splitlines() if line.startswith("| ")][1:]
    assert sorted(int(r.split(" | ")[0].strip("| ")) for r in rows) == front
    assert f"{len(front)} Pareto-optimal trials" in part and "(pareto.png)" in part
    assert (sweep_dir / "pareto.png").stat().st_size > 0
    assert "## Pareto front" in proc.stdout  # on the console too


@pytest.mark.parametrize("arg, line", [
    ("hydra.sweeper.objectives=[val_los,tokens_per_sec]",
     "error: hydra.sweeper.objectives: val_los: not a numeric run-record key; one of val_loss, "),
    ("hydra.sweeper.objectives=[val_loss,run_dir]",
     "error: hydra.sweeper.objectives: run_dir: not a numeric run-record key; one of val_loss, "),
    ("hydra.sweeper.objectives=[val_loss:down,mfu]",
     "error: hydra.sweeper.objectives: val_loss:down: a direction is one of minimize, maximize, auto"),
    ("hydra.sweeper.objectives=[val_loss]", "error: hydra.sweeper.objectives=['val_loss']: give two or more"),
])
def test_bad_objectives_are_one_line(run_cli, outputs, arg, line):
    proc = run_cli("train.py", "-m", "hparams_search=optuna_pareto", *SHAPE, arg, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(line), proc.stderr
    assert not list(outputs.glob("sweeps/*"))  # refused before the sweep dir exists


def _run(tmp_path, n, loss, speed, status="completed", seed=None):
    from article_gpt.sweeps.records import Run

    swept = {"heads": str(n), **({"seed": str(seed)} if seed is not None else {})}
    return Run(tmp_path / f"{n}-{seed}", {"status": status, "trial_number": n, "val_loss": loss,
                                          "tokens_per_sec": speed}, {}, label=str(n), swept=swept)


def test_front_is_the_trials_no_other_beats(tmp_path):
    from article_gpt.sweeps.pareto import front
    from article_gpt.sweeps.seeds import configurations

    def run(n, loss, speed, status="completed"):
        return _run(tmp_path, n, loss, speed, status)

    runs = [run(0, 3.0, 100.0), run(1, 2.0, 50.0), run(2, 3.0, 90.0), run(3, 2.0, 50.0), run(4, 1.0, 10.0),
            run(5, 0.5, 500.0, "pruned"), run(6, 4.0, 100.0), run(7, None, 900.0)]
    goals = {"val_loss": "minimize", "tokens_per_sec": "maximize"}
    # 2 loses to 0 (same loss, slower), 6 to 0 (worse loss, same speed); 1 and 3 tie, neither beats the other;
    # a pruned trial and one without a loss are no results
    numbers = lambda configs: [c.runs[0].metrics["trial_number"] for c in configs]  # noqa: E731
    assert numbers(front(configurations(runs), goals)) == [4, 1, 3, 0]
    assert numbers(front(configurations(runs), {"val_loss": "minimize", "tokens_per_sec": "minimize"})) == [4]


def test_the_front_is_drawn_through_the_means_of_a_configurations_seeds(tmp_path):
    """Seeds of one configuration are one point, at their means (issue 16: the Pareto front uses
    the means): one lucky seed must not put a configuration on the front."""
    from article_gpt.sweeps.pareto import front
    from article_gpt.sweeps.seeds import configurations

    runs = [_run(tmp_path, 0, 2.0, 100.0, seed=1), _run(tmp_path, 0, 4.0, 100.0, seed=2),  # mean 3.0
            _run(tmp_path, 1, 2.5, 100.0, seed=1), _run(tmp_path, 1, 2.5, 100.0, seed=2)]  # mean 2.5
    (best,) = front(configurations(runs), {"val_loss": "minimize", "tokens_per_sec": "maximize"})
    assert best.swept == {"heads": "1"} and best.mean("val_loss") == 2.5 and len(best.runs) == 2
