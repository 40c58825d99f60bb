"""Compute budgets: a run stops at its token or FLOPs budget to within one optimizer step, its LR
schedule spans exactly the budget, and every run reports the tokens and FLOPs it trained on.

The runs are real ``python train.py`` runs of a tiny model on 40 training windows of 16 tokens,
in batches of 16: every epoch is 3 steps of 256, 256 and 128 tokens, so a budget that a plain
``ceil(budget / (batch x block))`` would miss by several steps shows it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY, read_metrics, run_dirs, wandb_inspect
from hydra import compose, initialize_config_dir

from article_gpt.config.rules import validate
from article_gpt.errors import ConfigError
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.sweeps import records, summary
from article_gpt.sweeps.plot import compute_differs
from article_gpt.training.budget import epoch_step_tokens, steps_for_budget
from article_gpt.training.module import lr_lambda

SHAPE = {"embedding_dim": 32, "num_layers": 1, "heads": 2, "head_size": 16, "block_size": 16}
RUN = [*TINY, "model.num_layers=1", "data.train.max_samples=40", "optim.warmup_steps=2"]
EPOCH = [256, 256, 128]  # tokens of each step of one epoch of RUN's data
TOKENS = 1500  # 2 epochs (1,280 tokens) and one step: 7 steps; ceil(1500 / 256) = 6 would stop short
# The FLOPs budget in tokens, for a run on 2 DDP ranks: each rank reads 20 windows an epoch (16 + 4),
# so an epoch is 2 steps of 512 and 128 tokens over both ranks: 1 epoch and 1 step = 3 steps, 1,152 tokens.
FLOPS_TOKENS = 1000
DDP = [*(o for o in RUN if o != "trainer=debug"), "trainer=ddp", "trainer.devices=2", "+trainer.limit_val_batches=2"]


def flops_per_token() -> int:
    return GPT(GPTConfig(**SHAPE)).flops_per_token()


# ---------------------------------------------------------------- fast: the arithmetic


def test_steps_follow_the_real_batches_of_an_epoch():
    assert epoch_step_tokens(40, 16, 16) == EPOCH
    assert epoch_step_tokens(40, 16, 16, drop_last=True) == [256, 256]
    # DDP: each of 3 ranks reads ceil(40 / 3) = 14 windows (the sampler pads), all ranks' tokens count
    assert epoch_step_tokens(40, 16, 16, world_size=3) == [14 * 16 * 3]
    assert epoch_step_tokens(40, 16, 16, limit_batches=2) == [256, 256]
    assert epoch_step_tokens(40, 16, 16, limit_batches=0.5) == [256]
    assert epoch_step_tokens(40, 16, 16, accumulate=2) == [512, 128]
    assert steps_for_budget(TOKENS, EPOCH) == (7, 1536)
    assert steps_for_budget(1280, EPOCH) == (6, 1280)  # exactly two epochs
    assert steps_for_budget(1, EPOCH) == (1, 256)  # never less than one step
    assert steps_for_budget(3e9, [1_000_000]) == (3000, 3_000_000_000)
    with pytest.raises(ConfigError, match="no batches"):
        steps_for_budget(100, [])


@pytest.mark.parametrize("value", ["0", "-5", "abc", "inf"])
@pytest.mark.parametrize("key", ["budget.tokens", "budget.flops"])
def test_a_bad_budget_names_its_key(tmp_path, key, value):
    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"{key}={value}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value) == f"{key}={value}: must be a positive number or null"


def test_a_bad_budget_is_one_line_on_the_command_line(run_cli, outputs):
    proc = run_cli("train.py", *RUN, "budget.tokens=-5", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: budget.tokens=-5: must be a positive number or null"
    finished = [f for f in outputs.glob("runs/*/metrics.json") if '"completed"' in f.read_text()]
    assert not finished  # nothing that looks like a finished run


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def budget_runs(module_cli):
    """A token-budget run (W&B offline), and a FLOPs-budget run on 2 DDP ranks whose token budget is looser."""
    run, env, outputs = module_cli
    run("train.py", *RUN, f"budget.tokens={TOKENS}")
    first = run_dirs(outputs)
    flops = FLOPS_TOKENS * flops_per_token()
    run("train.py", *DDP, "logger=none", "callbacks=none", f"budget.flops={flops}", "budget.tokens=1e9")
    (second,) = set(run_dirs(outputs)) - set(first)
    return first[0], second, env


@pytest.mark.slow
@pytest.mark.all_cores  # budget_runs trains on 2 DDP ranks
def test_a_token_budget_stops_within_one_step_and_the_schedule_spans_it(budget_runs):
    run_dir, _, env = budget_runs
    m = read_metrics(run_dir)
    assert m["status"] == "completed"
    # trainer=debug's max_steps=6 and max_epochs=2 would stop it first: the budget replaces them
    assert m["steps"] == m["budget_steps"] == 7
    assert TOKENS <= m["tokens_seen"] < TOKENS + max(EPOCH)  # reached, by at most one step
    assert m["tokens_seen"] == 1536 and m["train_flops"] == 1536 * m["flops_per_token"]
    assert m["val_curve"][-1][0] == 7  # validated at the budget's last step, mid-epoch

    # the LR each step used: warmup 2 then cosine over exactly the budget's 7 steps ...
    records_ = wandb_inspect(run_dir, env)
    items = [r["history"]["item"] for r in records_ if r["type"] == "history"]
    lrs = {int(i["trainer/global_step"]): i["train/lr"] for i in items if "train/lr" in i}
    assert sorted(lrs) == list(range(7))
    for step, lr in lrs.items():
        assert lr == pytest.approx(1e-3 * lr_lambda(step, 2, 7, 0.1), rel=1e-5)
    # ... so that after the last step the schedule stands at its floor, lr x min_lr_ratio
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    sched = ckpt["lr_schedulers"][0]
    assert ckpt["global_step"] == sched["last_epoch"] == 7
    assert sched["_last_lr"][0] == pytest.approx(1e-3 * 0.1)
    assert ckpt["callbacks"]["ComputeBudget"]["tokens_seen"] == 1536  # a resumed run keeps counting

    final = wandb_inspect(run_dir, env, summary=True)
    assert final["summary"]["tokens_seen"] == 1536 and final["summary"]["train_flops"] == m["train_flops"]
    config = {k: v for r in records_ if r["type"] == "config" for k, v in r["config"]["update"].items()}
    assert config["tokens_seen"] == 1536 and config["train_flops"] == m["train_flops"]
    assert max(i.get("train/tokens_seen", 0) for i in items) == 1536  # a history axis to plot against


@pytest.mark.slow
@pytest.mark.all_cores  # budget_runs trains on 2 DDP ranks
def test_a_flops_budget_on_two_ranks_stops_within_one_step_and_the_tighter_budget_wins(budget_runs):
    _, run_dir, _ = budget_runs
    m = read_metrics(run_dir)
    fpt = m["flops_per_token"]
    assert m["status"] == "completed" and fpt == flops_per_token()
    budget = FLOPS_TOKENS * fpt
    assert budget <= m["train_flops"] < budget + 512 * fpt  # reached, by at most one step
    assert m["train_flops"] == m["tokens_seen"] * fpt == 1152 * fpt  # both ranks' tokens
    assert m["steps"] == m["budget_steps"] == 3  # budget.tokens=1e9 was the looser one


@pytest.mark.slow
@pytest.mark.all_cores  # budget_runs trains on 2 DDP ranks
def test_the_sweep_summary_reports_tokens_and_flops(budget_runs, tmp_path):
    runs = records.load_runs(list(budget_runs[:2]))
    summary.write_report(runs, tmp_path, "budgets")
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert {"tokens_seen", "train_flops"} <= set(head)
    seen = sorted(int(r.split(",")[head.index("tokens_seen")]) for r in rows[1:])
    assert seen == [1152, 1536]
    assert "| tokens seen | train FLOPs |" in (tmp_path / "summary.md").read_text()
    assert compute_differs(runs)  # different compute: comparison.png adds best val loss against FLOPs
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert not math.isnan(runs[0].val_loss)


# ---------------------------------------------------------------- budgets with accumulation, limits, a resume
ACCUMULATE = [*RUN, "logger=none", "+trainer.accumulate_grad_batches=2", f"budget.tokens={TOKENS}"]
# 2 batches an epoch: [256, 256]; 6 steps, 1,536 tokens (the whole epoch's 3 batches would give 7)
LIMITED = [*RUN, "logger=none", "trainer.limit_train_batches=2", f"budget.tokens={TOKENS}"]


@pytest.fixture(scope="module")
def budget_resumed(module_cli):
    """Runs of ACCUMULATE and LIMITED, and a LIMITED run stopped by SIGTERM at step 3 (mid-epoch)
    and resumed: (accumulated, limited, interrupted record, resumed) run dirs and records."""
    run, _, outputs = module_cli
    dirs = []
    for args in (ACCUMULATE, LIMITED):
        run("train.py", *args, timeout=900)
        (new,) = set(run_dirs(outputs)) - set(dirs)
        dirs.append(new)
    run("tests/interrupt_at.py", "3", "SIGTERM", *LIMITED, f"paths.log_dir={outputs}", check=False, timeout=900)
    (stopped,) = set(run_dirs(outputs)) - set(dirs)
    interrupted = read_metrics(stopped)
    run("train.py", f"resume={stopped}", timeout=900)
    return dirs[0], dirs[1], interrupted, stopped


@pytest.mark.slow
def test_a_token_budget_with_gradient_accumulation_stops_within_one_optimizer_step(budget_resumed):
    m = read_metrics(budget_resumed[0])
    per_step = epoch_step_tokens(40, 16, 16, accumulate=2)
    assert per_step == [512, 128]  # 2 batches, then the epoch's short third one
    assert m["steps"] == m["budget_steps"] == steps_for_budget(TOKENS, per_step)[0] == 5  # optimizer steps
    assert TOKENS <= m["tokens_seen"] < TOKENS + max(per_step)
    assert m["tokens_seen"] == 1792 and m["end"] == {"by": "budget", "step": 5}


@pytest.mark.slow
def test_a_token_budget_with_limit_train_batches_stops_within_one_step(budget_resumed):
    m = read_metrics(budget_resumed[1])
    assert m["steps"] == m["budget_steps"] == 6 and m["tokens_seen"] == 1536  # 3 epochs of 2 batches
    assert TOKENS <= m["tokens_seen"] < TOKENS + 256
    assert m["end"] == {"by": "budget", "step": 6}


@pytest.mark.slow
def test_a_budget_run_interrupted_and_resumed_ends_where_the_straight_one_did(budget_resumed):
    _, straight, interrupted, resumed = budget_resumed
    assert interrupted["status"] == "interrupted" and interrupted["steps"] == 3
    assert interrupted["end"] == {"by": "signal", "step": 3, "signal": "SIGTERM"}
    a, b = read_metrics(straight), read_metrics(resumed)
    assert b["resumes"][0]["from_step"] == 3 and b["status"] == "completed"
    for key in ("steps", "budget_steps", "tokens_seen", "train_flops", "end", "val_curve", "val_loss"):
        assert b[key] == a[key], key
