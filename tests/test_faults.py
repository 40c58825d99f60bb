"""Faults: a sweep killed mid-job and re-run, sweeps and jobs racing on one token cache, a NaN
loss, a disk that fills during a checkpoint write. Real subprocesses, real signals, real limits."""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, read_metrics
from test_resume import wandb_ids

from article_gpt.data import token_cache
from article_gpt.data.corpus import read_documents, tokenize_documents
from article_gpt.sweeps import records

SMALL = [*TINY, "model.num_layers=1", "trainer.limit_train_batches=3", "trainer.max_epochs=10"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def job_files(job_dir: Path) -> dict[str, str]:
    """The digests of a job's metrics.json and checkpoints."""
    return {p.name: digest(p) for p in [job_dir / "metrics.json", *(job_dir / "checkpoints").iterdir()]}


@pytest.mark.slow
def test_killed_sweep_resumes_skipping_completed_jobs(run_cli, outputs):
    sweep = ["-m", *SMALL, "trainer.max_steps=4", "model.heads=1,2,4", f"paths.log_dir={outputs}"]
    killed = run_cli("tests/interrupt_at.py", "2", "SIGTERM", *sweep, check=False, extra_env={"INTERRUPT_JOB": "1"},
                     timeout=900)
    assert killed.returncode == 143, killed.stderr[-3000:]
    (sweep_dir,) = (outputs / "sweeps").iterdir()
    first = {r.run_dir.name: r.status for r in records.load_runs([sweep_dir])}
    assert first == {"0": "completed", "1": "interrupted"}  # the summary was written anyway
    assert "interrupted" in (sweep_dir / "summary.csv").read_text()
    job0 = job_files(sweep_dir / "0")

    run_cli("train.py", f"resume_sweep={sweep_dir}", timeout=900)

    runs = {r.run_dir.name: r for r in records.load_runs([sweep_dir])}
    assert {k: r.status for k, r in runs.items()} == {"0": "completed", "1": "completed", "2": "completed"}
    assert job_files(sweep_dir / "0") == job0  # job 0 was not trained again
    m1 = read_metrics(sweep_dir / "1")
    assert [r["from_step"] for r in m1["resumes"]] == [2] and m1["steps"] == 4
    for job in "012":
        assert wandb_ids(sweep_dir / job) == {read_metrics(sweep_dir / job)["wandb_run_id"]}  # one W&B run each
    summary = (sweep_dir / "summary.csv").read_text()
    assert summary.count("completed") == 3 and "interrupted" not in summary


@pytest.mark.slow
@pytest.mark.all_cores  # 2 sweeps x 2 joblib jobs on the machine's cores
def test_two_sweeps_at_once_with_joblib_jobs_on_one_new_corpus(clean_env, outputs, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = (ROOT / "data" / "train.txt").read_text()
    (corpus / "train.txt").write_text(text[: len(text) // 2])
    (corpus / "val.txt").write_text(text[len(text) // 2:])
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *SMALL, "trainer.max_steps=3", "trainer.limit_val_batches=1",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.heads=1,2", "logger=none",
           f"data.train.path={corpus / 'train.txt'}", f"data.val.path={corpus / 'val.txt'}", f"paths.log_dir={outputs}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=clean_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    sweeps = sorted((outputs / "sweeps").iterdir())
    assert len(sweeps) == 2  # no shared directory
    for sweep_dir in sweeps:
        assert sorted(r.status for r in records.load_runs([sweep_dir])) == ["completed", "completed"]
    cache = outputs / "cache" / "tokens"
    files = sorted(cache.iterdir())
    assert len(files) == 2 and all(f.suffix == token_cache.SUFFIX for f in files), files  # train, val; no temp
    for split in ("train", "val"):
        fresh = tokenize_documents(read_documents(str(corpus / f"{split}.txt")), "gpt2", None)
        assert any(np.array_equal(token_cache.read(f), fresh) for f in files)  # whole, not corrupted


RACE = """
import sys
from article_gpt.data.corpus import read_documents, tokenize_documents
ids = tokenize_documents(read_documents(sys.argv[1]), "gpt2", sys.argv[2])
print(len(ids), int(ids.astype('int64').sum()))
"""


def test_processes_racing_on_one_token_cache(tmp_path):
    corpus, cache = tmp_path / "c.txt", tmp_path / "cache"
    corpus.write_text((ROOT / "data" / "val.txt").read_text() * 3)
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(corpus), str(cache)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = {p.communicate(timeout=300)[0] for p in procs}
    assert [p.returncode for p in procs] == [0] * 4 and len(outs) == 1, outs
    (cached,) = cache.iterdir()  # one file, no temporary left behind
    fresh = tokenize_documents(read_documents(str(corpus)), "gpt2", None)
    assert np.array_equal(token_cache.read(cached), fresh)
    assert outs == {f"{len(fresh)} {int(fresh.astype('int64').sum())}\n"}  # every process got the same ids


@pytest.mark.slow
def test_nan_loss_fails_with_its_step_and_the_last_finite_loss(run_cli, outputs):
    # fp16 weights pushed by a huge step overflow at once: the loss is NaN at step 2
    proc = run_cli("train.py", *SMALL, "trainer.max_steps=6", "optim.lr=10", "optim.warmup_steps=0",
                   "trainer.precision=16-true", "logger=none", check=False, timeout=900)
    assert proc.returncode != 0
    (run_dir,) = (outputs / "runs").iterdir()
    m = read_metrics(run_dir)
    assert m["status"] == "failed", m
    assert "train/loss is nan at step 2; the last finite loss was" in m["error"] and "at step 1" in m["error"], m
    assert m["steps"] == 2 and (run_dir / "error.log").is_file()
    assert "error: NonFiniteLossError: train/loss is nan at step 2" in proc.stderr.strip().splitlines()[-1]


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_disk_full_during_checkpoint_write_leaves_no_truncated_checkpoint(clean_env, outputs):
    # every file this process writes may hold 4 MB, a checkpoint needs ~19 MB: its write fails midway
    cmd = [sys.executable, str(ROOT / "train.py"), *SMALL, "trainer.max_steps=4", f"paths.log_dir={outputs}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=clean_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600, preexec_fn=limit_file_size(4_000_000))
    assert proc.returncode != 0
    (run_dir,) = (outputs / "runs").iterdir()
    m = read_metrics(run_dir)
    assert m["status"] == "failed" and "File too large" in m["error"], m["error"]
    ckpts = run_dir / "checkpoints"
    assert not ckpts.exists() or list(ckpts.iterdir()) == []  # nothing that could pass for a checkpoint


SAVE_TWICE = """
import resource, sys, torch
from article_gpt.recovery.checkpoint_io import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({"w": torch.ones(1000), "step": 1}, sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
try:
    io.save_checkpoint({"w": torch.ones(1_000_000), "step": 2}, sys.argv[1])
except OSError as err:
    print("failed:", err.strerror)
"""


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    out = subprocess.run([sys.executable, "-c", SAVE_TWICE, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.strip() == "failed: File too large"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the temporary file is gone
