"""trainer=ddp on CPU (gloo, 2 processes): a single run and a sweep of DDP jobs.

Lightning's own DDP launcher re-runs ``sys.argv`` for the other ranks, which under ``-m`` is the
whole sweep; article_gpt.parallel.ddp starts them from the job's own overrides. Only
rank 0 writes the run's files and its W&B run.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, read_metrics, run_dirs, wandb_inspect
from hydra import compose, initialize_config_dir
from test_ddp_resume import DDP_SHAPE
from test_launchers import DDP, check_sweep
from test_launchers import DDP_TOKENS as TOKENS
from test_optuna import BAD, GOOD, PRUNE_EARLY, study_trials

from article_gpt.config.rules import validate
from article_gpt.errors import ConfigError

pytestmark = pytest.mark.all_cores  # 2 DDP ranks, one core each; devices checked against the machine's cores


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_trainer_group_composes_and_rejects_devices_this_machine_lacks() -> None:
    cfg = compose_train("trainer=ddp")
    assert cfg.trainer.strategy._target_ == "article_gpt.parallel.ddp.JobDDPStrategy"
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("cpu", 2, "32-true")
    fp16 = compose_train("trainer=gpu_fp16").trainer
    assert (fp16.accelerator, fp16.precision) == ("gpu", "16-mixed")
    # no CUDA and no Apple GPU here: one line each, before anything is built
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu: no CUDA device"):
        validate(compose_train("trainer=gpu_fp16"))
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=mps: no Apple-silicon GPU"):
        validate(compose_train("trainer=mps"))
    # Lightning's own DDP would re-run the whole command line in every rank
    with pytest.raises(ConfigError, match=r"^trainer.devices=2: more than one device needs trainer=ddp"):
        validate(compose_train("trainer.devices=2"))


@pytest.mark.slow
def test_single_ddp_run_writes_one_of_everything(run_cli, outputs, clean_env) -> None:
    run_cli("train.py", *DDP, "model.heads=2")
    (run,) = run_dirs(outputs)  # rank 1 wrote into rank 0's directory, not one of its own
    names = {p.name for p in run.iterdir()}
    assert {"metrics.json", "loss.png", "samples.txt", "checkpoints", "wandb", "train_rank1.log"} <= names
    assert not {n for n in names if n.startswith("error")}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run / "train_rank1.log").read_text()
    metrics = read_metrics(run)
    assert metrics["status"] == "completed" and metrics["steps"] == 2
    assert metrics["tokens_seen"] == TOKENS  # both ranks' batches
    assert metrics["threads"] == 1  # 2 cores / 2 ranks
    # MFU over both ranks' devices: tokens/s counts both ranks, the peak is one rank's (1 thread)
    assert metrics["mfu"] == pytest.approx(
        metrics["flops_per_token"] * metrics["tokens_per_sec"] / (2 * metrics["peak_flops"]), abs=1e-4)
    assert "1 threads" in metrics["peak_source"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    final = wandb_inspect(run, clean_env, summary=True)
    assert final["state"] == "finished" and final["summary"]["status"] == "completed"


@pytest.mark.slow
def test_sweep_of_ddp_jobs_runs_each_job_once(run_cli, outputs, clean_env) -> None:
    proc = run_cli("train.py", "-m", "model.heads=2,4", *DDP)
    assert len(list((outputs / "sweeps").iterdir())) == 1  # no rank started a sweep of its own
    trained = check_sweep(outputs, clean_env, ["2", "4"], failed=())
    assert len(trained) == 2 and all(m["tokens_seen"] == TOKENS for m in trained)
    for job in ("0", "1"):
        assert list((outputs / "sweeps").glob(f"*/{job}/train_rank1.log"))
    assert proc.stdout.count("| completed |") == 2


@pytest.mark.slow
def test_optuna_trial_under_ddp_is_pruned_on_both_ranks_at_the_same_validation(run_cli, outputs, clean_env, tmp_path):
    import optuna

    # 2 validations of 3 steps a trial; the hopeless trial is pruned at the first, on both ranks
    shape = [a for a in DDP_SHAPE if not a.startswith(("trainer.max_", "model.heads=", "sample."))]
    sweep_dir, events = outputs / "search", tmp_path / "events"
    run_cli("tests/interrupt_at.py", "999", "SIGTERM", "-m", "hparams_search=optuna", *shape, *PRUNE_EARLY,
            "trainer.max_epochs=2", "trainer.num_sanity_val_steps=0", "sample.max_new_tokens=0", "model.heads=2",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.name=grid", f"optim.lr=choice({GOOD},{BAD})",
            "hydra.sweeper.sampler.seed=1",  # the grid's order: the good trial first, then the hopeless one
            f"hydra.sweep.dir={sweep_dir}", f"paths.log_dir={outputs}", timeout=900,
            extra_env={"EVENTS_DIR": str(events)})
    first, second = sorted(study_trials(sweep_dir), key=lambda t: t.number)
    assert (first.params["optim.lr"], first.state) == (GOOD, optuna.trial.TrialState.COMPLETE)
    assert (second.params["optim.lr"], second.state) == (BAD, optuna.trial.TrialState.PRUNED)
    m = read_metrics(sweep_dir / "1")
    assert m["status"] == "pruned" and m["pruned_at_validation"] == 0 and m["steps"] == 3
    # where each rank's training ended, one line a trial: the pruned trial stopped at step 3 on both
    assert [(events / f"rank{r}.end").read_text().split() for r in (0, 1)] == [["6", "3"], ["6", "3"]]
