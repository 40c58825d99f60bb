"""A 2-rank CPU DDP run (gloo) stopped mid-epoch and resumed continues exactly like one that was not.

Real runs in subprocesses, each rank writing its batches and losses (tests/interrupt_at.py,
``EVENTS_DIR``): one straight run of 8 steps, one stopped by a real SIGTERM that only rank 1
receives when step 4 is done (mid-epoch: 3 batches an epoch on each rank), then ``resume=latest``
to the end. Both ranks must stop at the same step with a resumable checkpoint, and the resumed run
must match the straight one: both ranks' batches and losses at every step, each W&B step once,
the same final checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import read_metrics, run_dirs
from test_resume import wandb_history, wandb_ids

# 2 DDP ranks, one core each; one worker runs the module fixture's runs for every test
pytestmark = [pytest.mark.all_cores, pytest.mark.slow, pytest.mark.xdist_group("test_ddp_resume")]

# 3 batches an epoch on each rank (validation after each), 8 steps: the run ends mid-epoch 2
DDP_SHAPE = ["trainer=ddp", "trainer.devices=2", "trainer.max_steps=8", "trainer.max_epochs=10",
             "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
             "callbacks.progress_bar.refresh_rate=0", "model.embedding_dim=32", "model.num_layers=1",
             "model.heads=2", "model.head_size=16", "model.block_size=16", "sample.max_new_tokens=8"]
NEVER = "999"  # a step the runs never reach: interrupt_at.py only records events
STOP_AT = 4


def steps(folder: Path, rank: int) -> list[tuple[int, str, str]]:
    """(global step, batch digest, loss) of every step rank ``rank`` trained, in order."""
    path = folder / f"rank{rank}.steps"
    return [(int(s), d, loss) for s, d, loss in map(str.split, path.read_text().splitlines())] if path.exists() else []


@pytest.fixture(scope="module")
def runs(module_cli, tmp_path_factory):
    run, env, outputs = module_cli
    ev = tmp_path_factory.mktemp("ddp_events")
    run("tests/interrupt_at.py", NEVER, "SIGTERM", *DDP_SHAPE, f"paths.log_dir={outputs}", timeout=900,
        extra_env={"EVENTS_DIR": str(ev / "straight")})
    (straight,) = run_dirs(outputs)
    stopped = run("tests/interrupt_at.py", str(STOP_AT), "SIGTERM", *DDP_SHAPE, f"paths.log_dir={outputs}",
                  check=False, timeout=900, extra_env={"EVENTS_DIR": str(ev / "stopped"), "INTERRUPT_RANK": "1"})
    (interrupted,) = [d for d in run_dirs(outputs) if d != straight]
    after_stop = read_metrics(interrupted)
    ckpt = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = run("tests/interrupt_at.py", NEVER, "SIGTERM", "resume=latest", f"paths.log_dir={outputs}",
                  timeout=900, extra_env={"EVENTS_DIR": str(ev / "resumed")})
    return SimpleNamespace(env=env, outputs=outputs, events=ev, straight=straight, interrupted=interrupted,
                           stopped=stopped, after_stop=after_stop, ckpt=ckpt, resumed=resumed)


def test_sigterm_to_rank_1_stops_both_ranks_at_one_step_with_a_resumable_checkpoint(runs):
    assert runs.stopped.returncode == 143, runs.stopped.stderr[-3000:]  # 128 + SIGTERM, on rank 0 too
    m = runs.after_stop
    assert m["status"] == "interrupted" and m["steps"] == STOP_AT and "SIGTERM" in m["error"]
    for rank in (0, 1):  # neither rank trained past the step the signal ended
        assert [s for s, _, _ in steps(runs.events / "stopped", rank)] == list(range(STOP_AT))
    assert runs.ckpt["global_step"] == STOP_AT
    assert runs.ckpt["article_gpt"]["data"] == {"epoch": 1, "batches_done": 1, "batches_total": 3}
    assert "Traceback" not in runs.stopped.stderr


def test_resumed_ddp_run_trains_both_ranks_on_the_straight_runs_batches_and_losses(runs):
    for rank in (0, 1):
        straight = steps(runs.events / "straight", rank)
        assert [s for s, _, _ in straight] == list(range(8))
        # the stopped run's steps, then the resumed run's: the straight run's batches and losses, to the last bit
        assert steps(runs.events / "stopped", rank) + steps(runs.events / "resumed", rank) == straight, rank
    batches = [{d for _, d, _ in steps(runs.events / "straight", rank)} for rank in (0, 1)]
    assert not batches[0] & batches[1]  # each rank trained on batches of its own


def test_resumed_ddp_run_logs_each_wandb_step_once_and_ends_at_the_same_checkpoint(runs):
    straight, resumed = wandb_history(runs.straight, runs.env), wandb_history(runs.interrupted, runs.env)
    assert [s for s, _ in resumed] == list(range(8)), resumed  # no gap, no repeated step
    assert resumed == straight
    m = read_metrics(runs.interrupted)
    assert m["status"] == "completed" and m["steps"] == 8 and m["resumes"][0]["from_step"] == STOP_AT
    assert m["tokens_seen"] == read_metrics(runs.straight)["tokens_seen"] == 8 * 16 * 16 * 2  # both ranks
    assert wandb_ids(runs.interrupted) == {m["wandb_run_id"]} == {runs.after_stop["wandb_run_id"]}
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (runs.straight, runs.interrupted))
    assert a["global_step"] == b["global_step"] == 8
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["optimizer_states"][0]["state"].keys() == b["optimizer_states"][0]["state"].keys()
    for k, state in a["optimizer_states"][0]["state"].items():
        assert all(torch.equal(v, b["optimizer_states"][0]["state"][k][n]) for n, v in state.items())
