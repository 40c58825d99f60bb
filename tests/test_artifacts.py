"""Run bookkeeping: what counts as the best validation, and how a run is named."""

from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from article_gpt.recovery.resume import Start
from article_gpt.runs.record import Status
from article_gpt.tracking.recorder import RunRecorder, perplexity
from article_gpt.tracking.report import report
from article_gpt.training.closing import Job, assemble, write_files
from article_gpt.training.context import RunContext, short_name


def test_best_val_is_after_training_began():
    """The pre-training point (step 0) is on the curve but has no checkpoint: it is never 'best'."""
    rec = RunRecorder()
    rec.initial_val = 5.0
    rec.val_curve = [(0, 5.0), (7, 6.5), (14, 6.0)]  # training made it worse
    assert rec.best_val == 6.0
    assert RunRecorder().best_val is None


def test_short_name_keeps_keys_apart_and_drops_paths():
    name = short_name(["model.dropout=0.2", "data.dropout=0.1", "model.heads=4", "paths.log_dir=/tmp/x",
                       "tags=[a]"])
    assert name == "model.dropout=0.2,data.dropout=0.1,heads=4"


# ---- the closing path never raises -------------------------------------------------------------
def _ctx(tmp_path) -> RunContext:
    return RunContext(tmp_path / "run", "group", "name", ["optim.lr=10"], multirun=True)


def _job(tmp_path, status: Status, error: str | None = None, trainer=None, derived: dict | None = None) -> Job:
    cfg = OmegaConf.create({"trainer": {"precision": "32-true"}, "tf32": False, "optimized_metric": "val_loss"})
    job = Job(cfg, _ctx(tmp_path), Start("fresh"), pruning=None, recorder=_diverged())
    job.status, job.error, job.trainer, job.derived = status, error, trainer, derived or {}
    return job


def _diverged() -> RunRecorder:
    rec = RunRecorder()
    rec.initial_val = 10.8
    rec.val_curve = [(0, 10.8), (6, 2.5e3), (12, 1.2e4)]  # optim.lr=10: a diverged run, exp(2500) overflows
    return rec


def test_a_diverged_runs_record_and_report_do_not_raise(tmp_path, capsys):
    job = _job(tmp_path, Status.COMPLETED)
    job.record = assemble(job)
    metrics = job.record.to_dict()
    assert metrics["val_loss"] == 2.5e3 and metrics["val_ppl"] is None and "report_error" not in metrics
    assert perplexity(709.0) == pytest.approx(math.exp(709.0)) and perplexity(710.0) is None
    assert perplexity(float("nan")) is None and perplexity(None) is None
    report(metrics, None)
    assert "best val loss: 2500.0000 (ppl inf), from 10.8000" in capsys.readouterr().out
    (tmp_path / "run").mkdir()
    write_files(job)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val_ppl"] is None  # strict JSON: null


class _BrokenTrainer:
    """A trainer whose state cannot be read, as after a crash inside Lightning."""

    callbacks: list = []

    @property
    def global_step(self):
        raise RuntimeError("trainer state lost")


def test_a_fact_that_cannot_be_read_still_leaves_a_record(tmp_path, capsys):
    job = _job(tmp_path, Status.FAILED, "RuntimeError: boom", _BrokenTrainer(), {"params_total": 5})
    metrics = assemble(job).to_dict()
    assert metrics["status"] == "failed" and metrics["error"] == "RuntimeError: boom"
    assert metrics["report_error"] == "RuntimeError: trainer state lost" and metrics["params_total"] == 5
    report({}, None)  # even a record missing every key: a note, not an exception
    assert "note: the end-of-run report failed" in capsys.readouterr().out
