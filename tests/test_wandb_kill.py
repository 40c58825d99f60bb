"""W&B after a hard kill: a job killed with SIGKILL (no handler runs: no record, no W&B finish)
and resumed continues as the same W&B run. The id comes from the killed attempt's own W&B files
(recovery/resume.py ``wandb_run_id``), which W&B writes when it starts, before the first step.
Read back offline with `wandb leet inspect`.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, read_metrics, run_dirs, wandb_inspect, wandb_offline_ids

SHAPE = [*TINY, "model.num_layers=1", "logger=wandb"]  # trainer=debug: 3 steps an epoch, 6 in all


@pytest.fixture(scope="module")
def killed(module_cli):
    """A run killed with SIGKILL once step 4 is done (its last checkpoint: step 3's validation),
    then ``resume=latest``; what the kill left, and the run dir after the resume."""
    run, env, outputs = module_cli
    proc = run("tests/interrupt_at.py", "4", "SIGKILL", *SHAPE, f"paths.log_dir={outputs}", check=False, timeout=900)
    (run_dir,) = run_dirs(outputs)
    left = SimpleNamespace(returncode=proc.returncode, record=(run_dir / "metrics.json").exists(),
                           step=torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"],
                           ids=wandb_offline_ids(run_dir))
    resumed = run("train.py", "resume=latest", timeout=900)
    return SimpleNamespace(run_dir=run_dir, env=env, left=left, resumed=resumed)


@pytest.mark.slow
def test_a_killed_job_leaves_its_checkpoint_and_its_wandb_id(killed):
    left = killed.left
    assert left.returncode == -9 and not left.record  # killed outright: nothing closed it
    assert left.step == 3 and len(left.ids) == 1


@pytest.mark.slow
def test_the_resumed_job_continues_the_same_wandb_run(killed):
    (run_id,) = killed.left.ids
    m = read_metrics(killed.run_dir)
    assert m["status"] == "completed" and m["steps"] == 6 and m["resumes"][0]["from_step"] == 3
    assert m["wandb_run_id"] == run_id and wandb_offline_ids(killed.run_dir) == [run_id, run_id]
    records = wandb_inspect(killed.run_dir, killed.env, attempt=1)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["run_id"] == run_id
    steps = [r["history"]["item"]["trainer/global_step"] for r in records
             if r["type"] == "history" and "train/loss" in r["history"]["item"]]
    assert steps == [3, 4, 5]  # the steps after the checkpoint, each once
    final = wandb_inspect(killed.run_dir, killed.env, summary=True, attempt=1)
    assert final["summary"]["status"] == "completed"
