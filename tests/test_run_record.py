"""The run record (metrics.json) and run directories: one schema, one writer, one reader with one
policy for a damaged file, one rule for which run is the latest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from article_gpt.runs import dirs, record
from article_gpt.runs.record import MAXIMIZED, OPTIMIZABLE_METRICS, RecordError, RunRecord, Status

DAMAGED = '{"status": "completed", "val_loss": 5.0'  # cut short, as by a full disk or a bad copy


def job(folder: Path, overrides: list[str], **fields) -> Path:
    """A run directory as a finished run leaves it (its overrides and record)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record.write(folder, RunRecord(**{"status": Status.COMPLETED, "overrides": overrides, **fields}))
    return folder


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def one_line(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [expected], proc.stderr


# ---- the schema ------------------------------------------------------------------------------
def test_the_record_round_trips_and_keeps_only_its_fields(tmp_path):
    rec = RunRecord(status=Status.PRUNED, val_loss=5.5, steps=12, val_curve=[[0, 6.0], [12, 5.5]])
    record.write(tmp_path, rec)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["status"] == "pruned" and list(data)[:3] == ["status", "error", "val_loss"]
    assert "report_error" not in data and "wandb_run_id" not in data  # optional fields only where set
    assert record.read(tmp_path) == rec and record.read(tmp_path).status is Status.PRUNED
    (tmp_path / "metrics.json").write_text(json.dumps({**data, "from_a_newer_version": 1}))
    assert record.read(tmp_path) == rec
    assert record.read(tmp_path / "none") is None  # no file: no record, not an error


def test_optimizable_metrics_and_their_direction_come_from_the_schema():
    assert {"val_loss", "tokens_per_sec", "mfu", "train_flops"} <= set(OPTIMIZABLE_METRICS)
    assert not {"status", "run_dir", "threads", "peak_flops", "val_curve"} & set(OPTIMIZABLE_METRICS)
    assert MAXIMIZED == {"tokens_per_sec", "model_flops_per_sec", "mfu"}
    assert Status.COMPLETED.finished and Status.PRUNED.finished
    assert not Status.FAILED.finished and not Status.INTERRUPTED.finished


@pytest.mark.parametrize("text, why", [(DAMAGED, "damaged run record"), ("[1, 2]", "not a JSON object"),
                                       ('{"val_loss": 5}', "no 'status'"), ('{"status": "done"}', "'done'")])
def test_a_damaged_record_is_one_line_naming_the_file(tmp_path, text, why):
    (tmp_path / "metrics.json").write_text(text)
    with pytest.raises(RecordError) as err:
        record.read(tmp_path)
    line = str(err.value)
    assert line.startswith(f"{tmp_path / 'metrics.json'}: ") and why in line and "\n" not in line


# ---- one policy wherever it is read ------------------------------------------------------------
def test_compare_runs_on_a_sweep_with_one_damaged_record_is_one_line(tmp_path, clean_env):
    sweep = tmp_path / "sweep"
    job(sweep / "0", ["model.heads=2"], val_loss=5.0)
    job(sweep / "1", ["model.heads=4"], val_loss=6.0)
    (sweep / "1" / "metrics.json").write_text(DAMAGED)
    proc = cli("scripts/compare_runs.py", str(sweep), env=clean_env)
    try:
        json.loads(DAMAGED)
    except ValueError as err:
        why = str(err)
    one_line(proc, f"error: {sweep / '1' / 'metrics.json'}: damaged run record ({why}); "
                   "move it away to start that run afresh")
    assert not (sweep / "summary.csv").exists()


def test_a_run_dir_with_a_damaged_record_is_refused_before_anything_is_written(tmp_path, clean_env):
    outputs = tmp_path / "outputs"
    run = job(outputs / "runs" / "r1", ["model.heads=2", f"paths.log_dir={outputs}"])
    (run / "metrics.json").write_text(DAMAGED)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    expected = f"error: {run / 'metrics.json'}: damaged run record"
    for args in ([f"resume={run}"], [f"hydra.run.dir={run}"], ["resume=latest", f"paths.log_dir={outputs}"]):
        proc = cli("train.py", *args, env=clean_env)
        assert proc.returncode == 2 and proc.stderr.startswith(expected), (args, proc.stderr[-2000:])
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (run / "metrics.json").read_text() == DAMAGED  # never overwritten


def test_a_sweep_job_with_a_damaged_record_is_refused_and_the_summary_says_so(tmp_path, capsys):
    from omegaconf import OmegaConf

    from article_gpt.recovery import resume
    from article_gpt.sweeps.callbacks import SweepSummary

    sweep = tmp_path / "sweep"
    job(sweep / "0", ["model.heads=2"], val_loss=5.0)
    (job(sweep / "1", ["model.heads=4"]) / "metrics.json").write_text(DAMAGED)
    value = resume.begin(sweep / "1", None, True, ["model.heads=4"], "val_loss")
    assert value != value  # NaN: the job is refused, the sweep goes on
    assert capsys.readouterr().err.startswith(f"error: {sweep / '1' / 'metrics.json'}: damaged run record")
    with pytest.raises(SystemExit) as stop:
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sweep summary: not written: {sweep / '1' / 'metrics.json'}: damaged")
    assert (sweep / "1" / "metrics.json").read_text() == DAMAGED


def test_the_optuna_sweeper_reads_a_stale_trials_record_with_the_same_policy(tmp_path):
    import optuna

    from article_gpt.sweeps.optuna_sweeper import OptunaSweeperImpl

    sweep = tmp_path / "sweep"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    trial = study.ask()
    trial.set_user_attr("sweep_dir", str(sweep))
    (job(sweep / str(trial.number), ["model.heads=2"]) / "metrics.json").write_text(DAMAGED)
    with pytest.raises(RecordError, match=f"^{sweep / '0' / 'metrics.json'}: damaged run record"):
        OptunaSweeperImpl(params={})._stale_trials(study, sweep, "val_loss")


# ---- one rule for the latest run ---------------------------------------------------------------
def touch(path: Path, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))


def test_resume_latest_and_ckpt_latest_pick_the_same_run(tmp_path):
    """a: its last checkpoint is old, but it wrote its record last; b: a newer best checkpoint.
    Both 'latest' rules name the run that wrote last (a), whatever each then needs of it."""
    a = job(tmp_path / "runs" / "a", ["model.heads=2"])
    b = job(tmp_path / "runs" / "b", ["model.heads=4"])
    touch(a / "checkpoints" / "last.ckpt", 100)
    os.utime(a / "metrics.json", (300, 300))
    touch(b / "checkpoints" / "best.ckpt", 200)
    os.utime(b / "metrics.json", (150, 150))
    assert dirs.latest_resumable(tmp_path) == a
    assert dirs.resolve_checkpoint("latest", tmp_path) == a / "checkpoints" / "last.ckpt"
    assert dirs.is_run_dir(a) and not dirs.is_run_dir(tmp_path / "runs")
