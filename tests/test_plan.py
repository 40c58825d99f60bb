"""``python train.py -m <sweep> plan=true``: every job's counts, the totals and an estimated wall time,
before anything runs, through the real CLI (article_gpt/sweeps/plan.py)."""

from __future__ import annotations

import itertools
import re

import pytest
from conftest import TINY, read_metrics

from article_gpt.model import accounting
from article_gpt.model.gpt import GPT, GPTConfig

# one tiny sweep, planned and then run for real: its epoch and step limits, and a token budget
SWEEP = [*TINY, "logger=none", "budget.tokens=null,700"]


def table(stdout: str) -> list[dict[str, str]]:
    """The plan's rows, by column name."""
    lines = [line for line in stdout.splitlines() if " | " in line]
    head = [c.strip() for c in lines[0].split("|")]
    return [dict(zip(head, (c.strip() for c in line.split("|")))) for line in lines[1:]]


def count(text: str) -> float:
    """``1.54K`` -> 1540.0 (the plan's compact numbers)."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def wall(stdout: str) -> float:
    m = re.search(r"estimated wall time: (?:(\d+)m )?(\d+) ?s", stdout)
    return 60 * int(m.group(1) or 0) + int(m.group(2))


@pytest.fixture(scope="module")
def planned_and_run(module_cli):
    """The sweep's plan (before any run, so nothing is there yet), then the same sweep run for real."""
    run, _, outputs = module_cli
    plan = run("train.py", "-m", *SWEEP, "plan=true")
    created = outputs.exists()
    run("train.py", "-m", *SWEEP, timeout=900)  # seconds on a quiet machine; minutes when it is shared
    (sweep,) = (outputs / "sweeps").iterdir()
    records = {int(job.name): read_metrics(job) for job in sweep.iterdir() if job.name.isdigit()}
    return plan, created, records, run


@pytest.mark.slow
def test_plan_rows_are_what_the_runs_record(planned_and_run):
    plan, created, records, _ = planned_and_run
    assert not created  # no outputs folder at all: no run dir, no sweep dir, no token cache folder
    assert "nothing was trained" in plan.stdout
    rows = table(plan.stdout)
    assert [r["job"] for r in rows] == ["0", "1"]
    assert [r["budget.tokens"] for r in rows] == ["null", "700"]  # a swept column never shadows one of the plan's
    for i, row in enumerate(rows):
        rec = records[i]
        assert count(row["params"]) == pytest.approx(rec["params_total"], rel=5e-3)
        assert count(row["non-emb"]) == pytest.approx(rec["params_non_embedding"], rel=5e-3)
        assert count(row["FLOPs/token"]) == pytest.approx(rec["flops_per_token"], rel=5e-3)
        assert int(row["steps"]) == rec["steps"]
        assert count(row["tokens"]) == pytest.approx(rec["tokens_seen"], rel=5e-3)
        assert count(row["train FLOPs"]) == pytest.approx(rec["train_flops"], rel=5e-3)
        assert row["ends at"] == ("budget.tokens" if rec["budget_steps"] else "trainer.max_steps")


@pytest.mark.slow
@pytest.mark.all_cores  # two joblib slots need two cores
def test_the_estimate_uses_the_recorded_runs(planned_and_run):
    plan, _, _, run = planned_and_run
    assert "a default (no completed run" in plan.stdout  # before the sweep ran: stated defaults
    again = run("train.py", "-m", *SWEEP, "plan=true").stdout
    assert "past runs nearest in size" in again and "median of past runs" in again
    # 16 planned jobs (nothing runs), so that two slots save more than the whole seconds it prints
    many = [*SWEEP, "seed=1,2,3,4,5,6,7,8", "threads=1", "plan=true"]
    four = run("train.py", "-m", *many, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2").stdout
    assert "hydra.launcher.n_jobs=2" in four
    assert wall(four) < wall(run("train.py", "-m", *many).stdout)  # two slots


def test_an_optuna_search_shows_its_costliest_trial_and_the_total(run_cli, outputs):
    shape = [a for a in TINY if not a.startswith("model.block_size=")]  # the search's block_size stays
    proc = run_cli("train.py", "-m", "hparams_search=optuna", *shape, "hydra.sweeper.n_trials=7", "plan=true")
    (row,) = table(proc.stdout)
    # the space of conf/hparams_search/optuna.yaml, minus what TINY fixes: block_size in 32..128, lr
    assert row["job"] == "max" and row["block_size"] == "128"
    tokens = 6 * 16 * 128  # trainer=debug: 6 steps of 16 windows of 128 tokens
    assert count(row["tokens"]) == pytest.approx(tokens, rel=5e-3)
    total = re.search(r"total at n_trials=7, before pruning: at most (\S+) tokens", proc.stdout)
    assert count(total.group(1)) == pytest.approx(7 * tokens, rel=5e-3)
    assert not outputs.exists()


def test_a_bad_sweep_is_refused_in_one_line(run_cli, outputs):
    proc = run_cli("train.py", "-m", *TINY, "model.heads=2,0", "plan=true", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: model.heads=0: must be a positive integer (job: ")
    bad = run_cli("train.py", "-m", *TINY, "plan=maybe", check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: plan=maybe: must be true or false"
    assert not outputs.exists()


@pytest.mark.parametrize("windows", ["random", "documents"])  # documents: the windows tiled as data/ids.py does
def test_the_plan_loads_no_torch(run_cli, windows):
    proc = run_cli("train.py", "-m", *TINY, "model.heads=2,4", f"data.windows={windows}", "plan=true",
                   extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "article_gpt.sweeps.plan" in modules
    assert not {m for m in modules if m.split(".")[0] in ("torch", "lightning")}


@pytest.mark.parametrize("bias,tie,position", itertools.product([True, False], [True, False], ["learned", "rope"]))
def test_the_counting_arithmetic_is_the_models(bias, tie, position):
    cfg = GPTConfig(vocab_size=300, block_size=16, embedding_dim=32, num_layers=2, heads=2, head_size=8,
                    bias=bias, tie_weights=tie, position=position)
    model = GPT(cfg)
    counts = accounting.param_counts(**cfg.to_dict())
    assert counts["params_total"] == sum(p.numel() for p in model.parameters())  # a tied weight once
    tables = model.tok_emb.weight.numel() + (model.pos_emb.weight.numel() if position == "learned" else 0)
    assert counts["params_non_embedding"] == counts["params_total"] - tables
    assert model.num_params() == counts
