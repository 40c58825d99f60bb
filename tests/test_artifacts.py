"""Run bookkeeping: what counts as the best validation, and how a run is named."""

from __future__ import annotations

from article_gpt.training.artifacts import RunRecorder
from article_gpt.training.context import short_name


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
