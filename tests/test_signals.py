"""Signals during training, in real subprocesses with real signals: the run saves a resumable
checkpoint at the step it stopped, writes ``status: interrupted``, closes W&B and exits with
128 + the signal number; a second Ctrl-C stops at once; under DDP one rank's SIGTERM stops
every rank and the process group exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import ROOT, TINY, read_metrics, run_dirs, wandb_inspect

LONG = [*TINY, "model.num_layers=1", "trainer.max_steps=100000", "trainer.max_epochs=100000",
        "trainer.limit_train_batches=3"]
# the same on two CPU processes (trainer=ddp in place of trainer=debug, with debug's limits)
DDP = [a for a in LONG if a not in ("trainer=debug", "trainer.limit_train_batches=3")] + [
    "trainer=ddp", "trainer.devices=2", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1"]


def wait_for_training(proc: subprocess.Popen, text: str = "Epoch 0:", timeout: float = 300) -> None:
    """Read the child's stdout (where the progress bar writes) until training has started; keep
    draining it afterwards, so the child never blocks on a full pipe."""
    seen: list[str] = []
    started = threading.Event()

    def reader() -> None:
        for chunk in iter(lambda: proc.stdout.read(256), ""):
            seen.append(chunk)
            if not started.is_set() and text in "".join(seen[-3:]):
                started.set()
        started.set()

    threading.Thread(target=reader, daemon=True).start()
    assert started.wait(timeout) and proc.poll() is None, "training never started"


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [("SIGUSR1", 138)])
def test_external_signal_during_training_saves_and_exits(clean_env, outputs, sig, code):
    cmd = [sys.executable, str(ROOT / "train.py"), *LONG, f"paths.log_dir={outputs}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for_training(proc, text="1/3")  # the progress bar past step 1: training, not starting up
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=300) == code
    finally:
        proc.kill()
    (run_dir,) = run_dirs(outputs)
    m = read_metrics(run_dir)
    assert m["status"] == "interrupted" and sig in m["error"] and 0 < m["steps"] < 100000
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == m["steps"]  # saved at the step where it stopped
    summary = wandb_inspect(run_dir, clean_env, summary=True)
    assert summary["summary"]["status"] == "interrupted" and summary["state"] != "running"


@pytest.mark.slow
def test_sigint_at_an_epoch_end_stops_after_its_validation_and_resumes(run_cli, outputs):
    # step 3 is the epoch's last: its validation runs, then the run stops and exits 130
    proc = run_cli("tests/interrupt_at.py", "3", "SIGINT", *LONG, f"paths.log_dir={outputs}", check=False, timeout=900)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "SIGINT received: saving a checkpoint at the end of this step" in proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    (run_dir,) = run_dirs(outputs)
    m = read_metrics(run_dir)
    assert m["status"] == "interrupted" and m["error"] == "Interrupted: SIGINT received at step 3"
    assert [step for step, _ in m["val_curve"]] == [0, 3]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    run_cli("train.py", f"resume={run_dir}", "trainer.max_steps=6", timeout=900)
    m = read_metrics(run_dir)
    assert m["status"] == "completed" and m["steps"] == 6 and m["resumes"][0]["from_step"] == 3
    assert [step for step, _ in m["val_curve"]] == [0, 3, 6]  # no validation repeated or skipped


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once(run_cli, outputs):
    proc = run_cli("tests/interrupt_at.py", "2", "SIGINTx2", *LONG, f"paths.log_dir={outputs}", check=False)
    assert proc.returncode == 130, proc.stderr[-2000:]
    (run_dir,) = run_dirs(outputs)
    m = read_metrics(run_dir)
    assert m["status"] == "interrupted" and m["steps"] == 2
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # no waiting for a checkpoint


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


@pytest.mark.slow
@pytest.mark.all_cores
def test_sigterm_to_one_ddp_rank_stops_every_rank(run_cli, outputs):
    proc = run_cli("tests/interrupt_at.py", "3", "SIGTERM", *DDP, f"paths.log_dir={outputs}", check=False, timeout=600)
    assert proc.returncode == 143, proc.stderr[-3000:]
    (run_dir,) = run_dirs(outputs)
    m = read_metrics(run_dir)
    assert m["status"] == "interrupted" and m["steps"] == 3
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert processes_mentioning(str(outputs)) == []  # no rank left behind


def wait_for_file_text(pattern: str, root, text: str, proc: subprocess.Popen, timeout: float = 300) -> object:
    """The first file under ``root`` matching ``pattern`` that contains ``text`` (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in root.glob(pattern):
            if text in path.read_text(errors="replace"):
                return path
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no {pattern} under {root} with {text!r}")


def slurm_runs(request) -> bool:
    try:
        request.getfixturevalue("slurm_cluster")
    except pytest.skip.Exception:
        return False
    return True


def release_requeued(job_id: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """SLURM holds a requeued job for two minutes (Reason=BeginTime): let it start now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        reason = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%r"], capture_output=True, text=True).stdout
        if "BeginTime" in reason:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True, timeout=60)
            return
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.all_cores  # a SLURM job is given the node's cores
@pytest.mark.parametrize("launcher", ["submitit_slurm", "submitit_local"])
def test_preempted_submitit_job_requeues_and_resumes(request, clean_env, outputs, tmp_path, launcher):
    """SIGUSR2 is submitit's preemption signal (SLURM sends it signal_delay_s before the time limit):
    the job saves its checkpoint, records `interrupted`, submitit requeues it with the same
    overrides into the same directory, and the requeued job resumes there as the same W&B run."""
    if launcher == "submitit_slurm":
        request.getfixturevalue("slurm_cluster")
    elif slurm_runs(request):
        pytest.skip("the same path ran on the real SLURM cluster (submitit_local is its stand-in)")
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"hydra/launcher={launcher}", *TINY, "model.num_layers=1",
           "trainer.max_steps=30", "trainer.limit_train_batches=3", "trainer.max_epochs=100", "model.heads=2",
           f"hydra.sweep.dir={sweep_dir}", f"paths.log_dir={outputs}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        log = wait_for_file_text(".submitit/*/*_log.out", sweep_dir, "Epoch 1:", proc)
        job_id = log.parent.name
        if launcher == "submitit_slurm":
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)
            release_requeued(job_id, proc)
        else:  # the job's own process: the only child of submitit's local controller (pid = job id)
            (task,) = subprocess.run(["pgrep", "-P", job_id], capture_output=True, text=True).stdout.split()
            os.kill(int(task), signal.SIGUSR2)
        out, err = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    m = read_metrics(sweep_dir / "0")
    assert m["status"] == "completed" and m["steps"] == 30
    (record,) = m["resumes"]  # one preemption, one resume
    assert 3 <= record["from_step"] < 30
    assert {p.name.rsplit("-", 1)[-1] for p in (sweep_dir / "0" / "wandb").glob("offline-run-*")} == {m["wandb_run_id"]}
