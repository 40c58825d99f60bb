"""Ctrl-C of a parallel sweep (joblib, 2 jobs running, 1 waiting): SIGINT to the sweep's process
group. Each running job stops at the end of its step with a checkpoint and records `interrupted`,
the waiting job is recorded `interrupted` without starting, the summary is written and the sweep
exits 130; `python train.py resume_sweep=<sweep dir>` completes it, one W&B run per job.

Both jobs hold at step 2 until the other is there too (tests/probes.py HoldAtStep): the signal
finds them both training, whatever the machine's load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import PROBES, ROOT, TINY, read_metrics, wandb_inspect, wandb_offline_ids

TINY_NO_HEADS = [o for o in TINY if not o.startswith("model.heads=")]
LONG = [*TINY_NO_HEADS, "model.num_layers=1", "trainer.max_steps=9", "trainer.max_epochs=100",
        "trainer.limit_train_batches=3", "callbacks.progress_bar.refresh_rate=0"]


def wait_for_files(folder: Path, count: int, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    """Until ``folder`` holds ``count`` files (each written by a job at its step)."""
    deadline = time.monotonic() + timeout
    while not (folder.exists() and len(list(folder.iterdir())) >= count):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"the jobs never reached the step: {log.read_text()[-3000:]}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.all_cores  # 2 joblib jobs side by side
def test_ctrl_c_of_a_parallel_sweep_then_resume_sweep(clean_env, outputs, tmp_path, run_cli):
    held, sweep, log = tmp_path / "held", tmp_path / "sweep", tmp_path / "sweep.log"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
           "model.heads=1,2,4", *LONG, f"+callbacks.hold={{_target_:probes.HoldAtStep,folder:{held},step:2,jobs:2}}",
           f"hydra.sweep.dir={sweep}", f"paths.log_dir={outputs}"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**clean_env, **PROBES}, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_files(held, 2, proc, log)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
            assert proc.wait(timeout=600) == 130, log.read_text()[-3000:]
        finally:
            proc.kill()
    stopped = {}
    for job in ("0", "1"):  # at the end of the step the signal found, or of the next one
        m = read_metrics(sweep / job)
        assert m["status"] == "interrupted" and "SIGINT" in m["error"] and m["steps"] in (2, 3), m
        assert torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == m["steps"]
        stopped[job] = m["steps"]
    waiting = read_metrics(sweep / "2")
    assert waiting["status"] == "interrupted" and waiting["error"] == "not started: the sweep was stopped by SIGINT"
    rows = [line for line in (sweep / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3 and sum("interrupted" in r for r in rows) == 3  # the header, a row per job

    run_cli("train.py", f"resume_sweep={sweep}", extra_env=PROBES, timeout=900)
    for job in ("0", "1", "2"):
        m = read_metrics(sweep / job)
        assert m["status"] == "completed", m
        assert set(wandb_offline_ids(sweep / job)) == {m["wandb_run_id"]}  # resumed as the same W&B run
        assert wandb_inspect(sweep / job, clean_env, summary=True, attempt=-1)["state"] == "finished"
    for job, step in stopped.items():
        assert [r["from_step"] for r in read_metrics(sweep / job)["resumes"]] == [step]
