"""A DDP rank killed outright (SIGKILL of rank 1, the one the job's process started) in a sweep of
two 2-rank CPU jobs: the job is recorded failed, the sweep goes on to the next job, which trains
on both ranks, the summary is written, and no rank process of either job is left.
(SIGTERM to rank 1, a clean stop of both ranks at one step, is in tests/test_ddp_resume.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import read_metrics, wandb_inspect
from test_ddp_resume import DDP_SHAPE

pytestmark = [pytest.mark.all_cores, pytest.mark.slow]  # 2 DDP ranks, one core each

SHAPE = [a for a in DDP_SHAPE if not a.startswith(("model.heads=", "trainer.max_steps="))] + ["trainer.max_steps=3"]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie awaiting its parent does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def killed_sweep(module_cli, tmp_path_factory):
    run, env, outputs = module_cli
    events = tmp_path_factory.mktemp("ddp_kill")
    proc = run("tests/interrupt_at.py", "1", "SIGKILL", "-m", "model.heads=2,4", *SHAPE, f"paths.log_dir={outputs}",
               check=False, timeout=900,
               extra_env={"EVENTS_DIR": str(events), "INTERRUPT_RANK": "1", "INTERRUPT_JOB": "0"})
    (sweep,) = (outputs / "sweeps").iterdir()
    return proc, env, sweep, events


def test_sigkill_of_one_rank_fails_its_job_and_the_sweep_goes_on(killed_sweep):
    proc, env, sweep, _ = killed_sweep
    assert proc.returncode == 1 and "1 of 2 jobs failed" in proc.stderr, proc.stderr[-3000:]
    failed, done = read_metrics(sweep / "0"), read_metrics(sweep / "1")
    assert failed["status"] == "failed" and failed["error"], failed
    assert done["status"] == "completed" and done["steps"] == 3
    assert done["tokens_seen"] == 3 * 16 * 16 * 2  # the next job trained on both ranks
    assert wandb_inspect(sweep / "1", env, summary=True)["state"] == "finished"
    assert wandb_inspect(sweep / "0", env, summary=True)["summary"]["status"] == "failed"
    rows = [line for line in (sweep / "summary.md").read_text().splitlines() if line.startswith("| ")]
    by_job = {row.split(" | ")[0].strip("| "): row for row in rows[1:]}
    assert "| failed |" in by_job["0"] and "| completed |" in by_job["1"], rows


def test_no_rank_process_is_left_after_a_rank_is_killed(killed_sweep):
    _, _, _, events = killed_sweep
    pids = [int(p) for rank in (0, 1) for p in (events / f"rank{rank}.pid").read_text().split()]
    assert len(pids) == 4 and len(set(pids[2:])) == 2  # job 0's rank 1 and job 1's rank 1 are new processes
    assert [pid for pid in pids if alive(pid)] == []
