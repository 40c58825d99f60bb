"""Sweeps under every launcher: joblib (parallel, pinned cores), submitit_local and submitit_slurm on
a real single-node SLURM cluster (scripts/slurm_local.sh; skipped with its reason where it cannot start).

Each sweep is the same three jobs: two that train and one that fails (``model.heads=0``). Under
every launcher: one job dir per job, one W&B run per trained job in the sweep's group (read back
offline), the summary written by the launching process, the failed job recorded and not fatal.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, wandb_inspect

from article_gpt.parallel.cores import joblib_jobs
from article_gpt.parallel.ddp import is_rank_zero

TINY_NO_HEADS = [o for o in TINY if not o.startswith("model.heads=")]
# 2-process CPU DDP (gloo), tiny and short: 2 steps of batch 16 x block 16 on each rank
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1", "trainer.max_steps=2",
       "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
       "callbacks.progress_bar.refresh_rate=0", "model.embedding_dim=32", "model.num_layers=1",
       "model.head_size=16", "model.block_size=16", "sample.max_new_tokens=8"]
DDP_TOKENS = 2 * 16 * 16 * 2  # 2 steps x batch 16 x block 16 x 2 ranks
QUIET = ["callbacks.progress_bar.refresh_rate=0", "trainer.max_epochs=1"]  # 3 steps
pytestmark = pytest.mark.all_cores  # parallel jobs, DDP ranks and SLURM tasks share out the machine's cores


def the_sweep(outputs: Path) -> Path:
    (sweep,) = (outputs / "sweeps").iterdir()
    return sweep


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def check_sweep(outputs: Path, env: dict, heads: list[str], failed: tuple[str, ...] = ("0",)) -> list[dict]:
    """The sweep of ``model.heads=<heads>``: job dirs 0..n-1, each trained job with its own W&B
    run in the sweep's group, failed ones recorded, and a summary row per job. Returns the
    trained jobs' metrics."""
    sweep = the_sweep(outputs)
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == [str(i) for i in range(len(heads))]
    assert not (outputs / "runs").exists()  # nothing ran as a separate single run
    trained, run_ids = [], set()
    for job, h in zip(jobs, heads, strict=True):
        metrics = read_metrics(job)
        assert metrics["name"] == f"heads={h}" and metrics["group"] == sweep.name
        if h in failed:
            assert metrics["status"] == "failed" and f"model.heads={h}" in metrics["error"]
            assert not (job / "wandb").exists()
            continue
        assert metrics["status"] == "completed", metrics["error"]
        assert {"metrics.json", "loss.png", "samples.txt", "checkpoints"} <= {p.name for p in job.iterdir()}
        (run,) = [r["run"] for r in wandb_inspect(job, env) if r["type"] == "run"]
        assert run["run_group"] == sweep.name and run["display_name"] == f"heads={h}"
        final = wandb_inspect(job, env, summary=True)
        assert final["state"] == "finished" and final["summary"]["status"] == "completed"
        run_ids.add(run["run_id"])
        trained.append(metrics)
    assert len(run_ids) == len(trained)  # never two jobs in one W&B run
    with (sweep / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["heads"], r["status"]) for r in rows) == sorted(
        (h, "failed" if h in failed else "completed") for h in heads)
    return trained


def run_sweep(run_cli, launcher: list[str], heads: str = "2,0,4", base: list[str] = (*TINY_NO_HEADS, *QUIET)):
    proc = run_cli("train.py", "-m", *launcher, f"model.heads={heads}", *base, check=False, timeout=600)
    # the failed job is recorded, the others ran, and the sweep's exit status says one failed
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 3 jobs failed" in proc.stderr
    assert "| job | heads |" in proc.stdout  # the launching process printed the summary
    return proc


# ---------------------------------------------------------------- fast


def test_joblib_n_jobs_reads_like_joblib() -> None:
    assert joblib_jobs(-1, 2) == 2 and joblib_jobs(-2, 8) == 7 and joblib_jobs(3, 8) == 3 and joblib_jobs(None, 4) == 4


def test_rank_zero_is_known_before_the_trainer() -> None:
    assert is_rank_zero({})
    assert not is_rank_zero({"LOCAL_RANK": "1", "NODE_RANK": "0"})
    assert not is_rank_zero({"LOCAL_RANK": "0", "NODE_RANK": "1"})
    assert not is_rank_zero({"SLURM_PROCID": "1"}) and is_rank_zero({"SLURM_PROCID": "0"})
    assert not is_rank_zero({"RANK": "3", "SLURM_PROCID": "0"})


# ---------------------------------------------------------------- slow: real sweeps


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_side_by_side_on_their_own_cores(run_cli, outputs, clean_env) -> None:
    run_sweep(run_cli, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    trained = check_sweep(outputs, clean_env, ["2", "0", "4"])
    for metrics in trained:  # 2 cores / 2 jobs: one core each, pinned, one torch thread
        assert metrics["threads"] == 1 and len(metrics["pinned_cores"]) == 1
        assert "n_jobs=2" in metrics["cores_reason"]


@pytest.mark.slow
def test_submitit_local_sweep(run_cli, outputs, clean_env) -> None:
    run_sweep(run_cli, ["hydra/launcher=submitit_local"])
    trained = check_sweep(outputs, clean_env, ["2", "0", "4"])
    assert all(m["threads"] == 1 and m["cores_reason"] == "hydra.launcher.cpus_per_task" for m in trained)
    assert len(list((the_sweep(outputs) / ".submitit").iterdir())) >= 3  # one submitit job per sweep job


@pytest.mark.slow
def test_submitit_slurm_sweep_of_ddp_jobs_on_a_real_cluster(slurm_cluster, run_cli, outputs, clean_env) -> None:
    # each sweep job is a SLURM job of trainer.devices=2 tasks, one DDP rank per task (SLURM_PROCID)
    run_sweep(run_cli, ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm_cluster}",
                        "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"], base=DDP)
    trained = check_sweep(outputs, clean_env, ["2", "0", "4"])
    # each rank ran inside a SLURM allocation with its own core (SLURM_CPUS_PER_TASK set by slurmd)
    assert all(m["cores_reason"] == "SLURM cpus_per_task" and m["threads"] == 1 for m in trained)
    assert all(m["tokens_seen"] == DDP_TOKENS for m in trained)  # both ranks trained
    tasks = [p for p in (the_sweep(outputs) / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    assert len(tasks) == 3 and len({t.name.split("_")[0] for t in tasks}) == 1  # one job array, one job each
    for task in tasks:  # two SLURM tasks per job: their logs, and rank 1's join
        assert {f"{task.name}_{r}_log.out" for r in (0, 1)} <= {p.name for p in task.iterdir()}
    logs = "".join(p.read_text() for t in tasks for p in t.glob("*_1_log.*"))
    assert logs.count("GLOBAL_RANK: 1, MEMBER: 2/2") >= 2


@pytest.mark.slow
def test_ray_sweep_on_a_local_ray(run_cli, outputs, clean_env) -> None:
    pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                        reason="hydra-ray-launcher is an extra (it pins cloudpickle<3): pip install -e '.[ray]'")
    # a Ray started for this sweep, on 127.0.0.1 only; each job one task of one CPU
    run_sweep(run_cli, ["hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2",
                        "+hydra.launcher.ray.init._node_ip_address=127.0.0.1"])
    trained = check_sweep(outputs, clean_env, ["2", "0", "4"])
    assert all(m["threads"] == 1 and m["cores_reason"] == "hydra.launcher.ray.remote.num_cpus" for m in trained)


@pytest.mark.slow
def test_parallel_jobs_never_oversubscribe_the_cores(run_cli, outputs) -> None:
    # 2 cores, 2 jobs at once: one core each, too few for 2 DDP ranks; each job stops with one line
    proc = run_cli("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.heads=2,4", *DDP,
                   "logger=none", check=False, timeout=600)
    assert proc.returncode == 1 and "2 of 2 jobs failed" in proc.stderr
    for job in job_dirs(the_sweep(outputs)):
        error = read_metrics(job)["error"]
        assert error.startswith("trainer.devices=2: this job was given 1 CPU core(s)") and "n_jobs=2" in error
        assert not (job / "checkpoints").exists()
