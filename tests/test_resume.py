"""Resume a run: ``python train.py resume=<run dir>`` continues an interrupted run bit for bit.

Real runs in subprocesses: one straight run of 8 steps, one interrupted by a real SIGTERM when
step 4 is done (mid-epoch: 3 batches an epoch), then ``resume=latest`` to the end. The loss at
every step, the validations and the W&B history must equal the straight run's exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, read_metrics, run_dirs, wandb_offline_ids

# 3 batches an epoch (validation after each), 8 steps: the run ends mid-epoch 2
SHAPE = [*TINY, "model.num_layers=1", "trainer.max_steps=8", "trainer.limit_train_batches=3",
         "trainer.max_epochs=10"]


def wandb_history(run_dir: Path, env: dict) -> list[tuple[int, float]]:
    """(trainer/global_step, train/loss) of every offline W&B run file in ``run_dir``, in order."""
    wandb_bin = Path(sys.executable).with_name("wandb")
    rows = []
    for offline in sorted((run_dir / "wandb").glob("offline-run-*")):
        out = subprocess.run([str(wandb_bin), "leet", "inspect", "--json", str(offline)], env=env,
                             capture_output=True, text=True, check=True, timeout=120).stdout
        for line in out.splitlines():
            item = json.loads(line).get("history", {}).get("item", {}) if line.strip() else {}
            if "train/loss" in item:
                rows.append((item["trainer/global_step"], item["train/loss"]))
    return rows


def wandb_ids(run_dir: Path) -> set[str]:
    return set(wandb_offline_ids(run_dir))


@pytest.fixture(scope="module")
def runs(module_cli):
    run, env, outputs = module_cli
    run("train.py", *SHAPE, timeout=900)
    (straight,) = run_dirs(outputs)
    stopped = run("tests/interrupt_at.py", "4", "SIGTERM", *SHAPE, f"paths.log_dir={outputs}", check=False, timeout=900)
    (interrupted,) = [d for d in run_dirs(outputs) if d != straight]
    after_stop = read_metrics(interrupted)
    ckpt = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = run("train.py", "resume=latest", timeout=900)
    return SimpleNamespace(run=run, env=env, outputs=outputs, straight=straight, interrupted=interrupted,
                           stopped=stopped, after_stop=after_stop, ckpt=ckpt, resumed=resumed)


@pytest.mark.slow
def test_interruption_leaves_a_mid_epoch_checkpoint_and_records(runs):
    assert runs.stopped.returncode == 143, runs.stopped.stderr[-2000:]  # 128 + SIGTERM
    m = runs.after_stop
    assert m["status"] == "interrupted" and m["steps"] == 4 and "SIGTERM" in m["error"]
    assert runs.ckpt["global_step"] == 4
    assert runs.ckpt["article_gpt"]["data"] == {"epoch": 1, "batches_done": 1, "batches_total": 3}
    assert "Traceback" not in runs.stopped.stderr


@pytest.mark.slow
def test_resumed_run_is_bit_identical_to_the_straight_run(runs):
    straight, resumed = wandb_history(runs.straight, runs.env), wandb_history(runs.interrupted, runs.env)
    assert [s for s, _ in resumed] == list(range(8)), resumed  # no gap, no repeated step in W&B
    assert resumed == straight  # the loss at every step, to the last bit
    a, b = read_metrics(runs.straight), read_metrics(runs.interrupted)
    assert b["val_curve"] == a["val_curve"] and b["val_loss"] == a["val_loss"]
    assert b["steps"] == a["steps"] == 8 and b["status"] == "completed"
    samples = (runs.interrupted / "samples.txt").read_text()
    assert samples == (runs.straight / "samples.txt").read_text()


@pytest.mark.slow
def test_resume_keeps_run_dir_wandb_run_and_history(runs):
    m = read_metrics(runs.interrupted)
    assert m["run_dir"] == str(runs.interrupted) and len(run_dirs(runs.outputs)) == 2
    assert wandb_ids(runs.interrupted) == {m["wandb_run_id"]} == {runs.after_stop["wandb_run_id"]}
    assert len(list((runs.interrupted / "wandb").glob("offline-run-*"))) == 2  # one file per attempt
    (record,) = m["resumes"]
    assert record["from_step"] == 4 and record["checkpoint"].endswith("checkpoints/last.ckpt") and record["at"]
    assert "resuming from" in runs.resumed.stdout


@pytest.mark.slow
def test_resume_with_a_raised_budget_continues_a_completed_run(runs):
    before = read_metrics(runs.straight)
    refused = runs.run("train.py", f"resume={runs.straight}", check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: resume=")
    assert "trainer.max_steps" in refused.stderr and read_metrics(runs.straight) == before
    runs.run("train.py", f"resume={runs.straight}", "trainer.max_steps=10")
    m = read_metrics(runs.straight)
    assert m["status"] == "completed" and m["steps"] == 10 and m["resumes"][0]["from_step"] == 8
    assert [s for s, _ in wandb_history(runs.straight, runs.env)] == list(range(10))


@pytest.mark.parametrize("extra, expected", [
    (["model.heads=4"], "error: model.heads=4: resume= continues the run with its own config"),
    (["optim.lr=0.1"], "error: optim.lr=0.1: resume= continues the run with its own config"),
])
def test_resume_refuses_anything_but_budget_keys(run_cli, tmp_path, extra, expected):
    run_dir = fake_run(tmp_path / "run", "interrupted")  # refused before Hydra starts: no training needed
    before = sorted(p.name for p in run_dir.rglob("*"))
    proc = run_cli("train.py", f"resume={run_dir}", *extra, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        expected + "; only trainer.max_epochs, trainer.max_steps, trainer.max_time, callbacks.early_stopping.patience "
        f"and budget.* may change "
        f"(start a new run to change {extra[0].split('=')[0]})"]
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_resume_of_a_folder_that_is_not_a_run(run_cli, tmp_path):
    proc = run_cli("train.py", f"resume={tmp_path}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: resume={tmp_path}: not a run directory (no .hydra/overrides.yaml); pass a folder under "
        "outputs/runs/ or outputs/sweeps/<id>/, or resume=latest"]


def fake_run(run_dir: Path, status: str | None, ckpt_model: dict | None = None) -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model.heads=2\n")
    if status is not None:
        (run_dir / "metrics.json").write_text(json.dumps({"status": status, "error": "boom", "wandb_run_id": "abc123",
                                                           "overrides": ["model.heads=2"], "val_loss": 5.0}))
    if ckpt_model is not None:
        (run_dir / "checkpoints").mkdir()
        torch.save({"hyper_parameters": {"model": ckpt_model}, "state_dict": {}}, run_dir / "checkpoints" / "last.ckpt")
    return run_dir


def test_one_rule_for_a_directory_that_holds_a_run(tmp_path):
    from article_gpt.recovery import resume

    assert resume.plan(tmp_path / "new").action == "fresh"
    done = resume.begin(fake_run(tmp_path / "done", "completed"), None, True, ["model.heads=2"], "val_loss")
    assert done == 5.0  # a completed sweep job: skipped, its recorded metric returned
    stopped = resume.plan(fake_run(tmp_path / "stopped", "interrupted", {"heads": 2}))
    assert stopped.action == "resume" and stopped.wandb_id == "abc123" and stopped.checkpoint.name == "last.ckpt"
    killed = resume.plan(fake_run(tmp_path / "killed", None, {"heads": 2}))  # killed hard: no metrics.json
    assert killed.action == "resume" and killed.checkpoint is not None
    failed = fake_run(tmp_path / "failed", "failed", {"heads": 2})
    again = resume.begin(failed, None, True, ["model.heads=2"], "val_loss")
    assert again.action == "rerun" and again.record(None)["attempts"] == 2
    assert sorted(p.name for p in (failed / "attempt-1").iterdir()) == ["checkpoints", "metrics.json"]
    other = resume.begin(fake_run(tmp_path / "other", "interrupted"), None, True, ["model.heads=4"], "val_loss")
    assert other != other  # NaN: a job of other overrides is never mixed into this directory


def test_a_checkpoint_of_another_model_is_not_resumed(tmp_path):
    from article_gpt.errors import ConfigError
    from article_gpt.recovery import resume

    run_dir = fake_run(tmp_path / "job", None, {"heads": 2, "head_size": 16})
    start = resume.plan(run_dir)
    assert resume.check_checkpoint(start, {"heads": 2, "head_size": 16}, run_dir, True) is start
    with pytest.raises(ConfigError, match=r"holds another model \(model.heads=2 there, 4 here\)"):
        resume.check_checkpoint(start, {"heads": 4, "head_size": 16}, run_dir, False)
    fresh = resume.check_checkpoint(start, {"heads": 4, "head_size": 16}, run_dir, True)
    assert fresh.action == "fresh" and (run_dir / "attempt-1" / "checkpoints" / "last.ckpt").is_file()


def test_resumed_order_yields_exactly_the_rest_of_the_epoch():
    from article_gpt.data.resumable import EpochShuffle, ResumableOrder

    straight = ResumableOrder(EpochShuffle(10, seed=3))
    straight.set_epoch(2)
    epoch2 = list(straight)
    resumed = ResumableOrder(EpochShuffle(10, seed=3))  # a new process: only (seed, epoch) and the position
    resumed.resume_at(2, 4, 8)  # 4 samples trained, the epoch limited to 8
    assert list(resumed) == epoch2[4:8] and len(resumed) == 10
    assert list(resumed) == epoch2  # the next pass is a whole epoch again
    resumed.set_epoch(3)
    assert sorted(resumed) == list(range(10)) and list(resumed) != epoch2
