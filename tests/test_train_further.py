"""A finished run trains further: ``checkpoints/last.ckpt`` holds the step the run ended at,
whatever ended it, and ``resume=`` with a larger limit trains on from there, with early
stopping's state carried over and its patience the user's to raise. The record says what ended
each run (``end``).

One chain of real runs in one folder, 3 steps an epoch with a validation after each:

1. early stopping (patience 1, ``min_delta=10``, so the second validation, step 6, stops it);
   ``model_checkpoint.mode=max`` keeps best.ckpt at the first validation (step 3), where
   Lightning's own save_last would have left last.ckpt too;
2. ``resume= trainer.max_steps=8`` (the README's way): trains steps 7 and 8, mid-epoch;
3. ``resume= callbacks.early_stopping.patience=3 trainer.max_steps=20``: the carried wait count
   (1 validation without improvement) reaches the raised patience at the second validation
   after the resume, step 12: stopped early again.

And one run that ends at its max_epochs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, read_metrics, run_dirs

FIRST = [*TINY, "model.num_layers=1", "logger=none", "trainer.max_epochs=10", "trainer.max_steps=-1",
         "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=10",
         "callbacks.model_checkpoint.mode=max"]
RESUMES = [  # (the limits raised, the step it ends at, what ended it)
    (["trainer.max_steps=8"], 8, "max_steps"),
    (["callbacks.early_stopping.patience=3", "trainer.max_steps=20"], 12, "early_stopping"),
]

pytestmark = pytest.mark.xdist_group("test_train_further")  # one worker runs the module fixture's runs


def last_step(run_dir, name: str = "last") -> int:
    return torch.load(run_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def chain(module_cli):
    """The record and checkpoint steps after the first run and after each resume."""
    run, _, outputs = module_cli
    run("train.py", *FIRST, timeout=900)
    (run_dir,) = run_dirs(outputs)
    def state() -> SimpleNamespace:
        return SimpleNamespace(m=read_metrics(run_dir), last=last_step(run_dir), best=last_step(run_dir, "best"))

    states = [state()]
    for limits, _, _ in RESUMES:
        run("train.py", f"resume={run_dir}", *limits, timeout=900)
        states.append(state())
    run("train.py", *TINY, "logger=none", "callbacks=none", "trainer.max_steps=-1", timeout=900)  # 2 epochs
    (epochs,) = set(run_dirs(outputs)) - {run_dir}
    return run_dir, states, read_metrics(epochs)


@pytest.mark.slow
def test_an_early_stopped_run_keeps_its_true_last_step(chain):
    _, (first, *_), _ = chain
    m = first.m
    assert m["status"] == "completed" and m["steps"] == 6
    assert m["end"] == {"by": "early_stopping", "step": 6, "validation": 1, "reason": "patience_exhausted"}
    assert first.best == 3 and first.last == 6  # last.ckpt is the step it stopped at, not best.ckpt's


@pytest.mark.slow
@pytest.mark.parametrize("n", range(len(RESUMES)))
def test_a_resumed_finished_run_trains_past_its_old_end(chain, n):
    _, states, _ = chain
    before, after = states[n], states[n + 1]
    _, steps, by = RESUMES[n]
    assert after.m["status"] == "completed" and after.m["steps"] == steps > before.m["steps"]
    assert after.m["end"]["by"] == by and after.m["end"]["step"] == steps
    assert after.last == steps
    # it started from the old end: its first step is the old last step + 1, nothing replayed
    assert after.m["resumes"][-1]["from_step"] == before.m["steps"] == before.last
    assert len(after.m["resumes"]) == n + 1
    val_steps = [s for s, _ in after.m["val_curve"]]
    assert val_steps == sorted(set(val_steps)) and set(range(0, steps + 1, 3)) <= set(val_steps)  # each once


@pytest.mark.slow
def test_early_stopping_state_carries_over_with_the_patience_the_resume_gives(chain):
    run_dir, states, _ = chain
    # with the checkpoint's patience of 1 it would stop at step 9; with the wait count reset, at 15
    assert states[2].m["end"] == {"by": "early_stopping", "step": 12, "validation": 3, "reason": "patience_exhausted"}
    (state,) = [v for k, v in torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"].items()
                if k.startswith("EarlyStopping")]
    assert state["patience"] == 3 and state["wait_count"] == 3


def test_a_resume_may_raise_the_patience_and_nothing_else_of_early_stopping(tmp_path):
    from article_gpt.errors import ConfigError
    from article_gpt.recovery.argv import rewrite_argv

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- callbacks.early_stopping.patience=1\n")
    argv = rewrite_argv(["train.py", f"resume={run_dir}", "callbacks.early_stopping.patience=4"])
    assert "callbacks.early_stopping.patience=4" in argv and "callbacks.early_stopping.patience=1" not in argv
    with pytest.raises(ConfigError, match="callbacks.early_stopping.monitor=x: resume= continues"):
        rewrite_argv(["train.py", f"resume={run_dir}", "callbacks.early_stopping.monitor=x"])


@pytest.mark.parametrize("by, raised, refused", [
    ("max_steps", "callbacks.early_stopping.patience=9", "trainer.max_steps, which ended it,"),
    ("budget", "trainer.max_steps=99", "budget.*, which ended it,"),
    ("max_steps", None, "trainer.max_steps, which ended it,"),
])
def test_a_finished_run_must_raise_the_limit_that_ended_it(tmp_path, by, raised, refused):
    import json

    from article_gpt.errors import ConfigError
    from article_gpt.recovery.argv import rewrite_argv

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed", "steps": 8, "end": {"by": by, "step": 8}}))
    with pytest.raises(ConfigError) as err:
        rewrite_argv(["train.py", f"resume={run_dir}", *([raised] if raised else [])])
    said = f"resume={run_dir}: {run_dir} already completed at step 8; raise {refused} to train it further"
    assert str(err.value) == said
    key = "trainer.max_steps=9" if by == "max_steps" else "budget.tokens=9"
    assert key in rewrite_argv(["train.py", f"resume={run_dir}", key])


@pytest.mark.parametrize("given", ["trainer.max_steps=8", "budget.tokens=512"])
def test_a_limit_the_finished_run_already_reached_is_refused(tmp_path, given):
    """An early-stopped run resumed with a limit it has already reached would train nothing and
    only rewrite its record (its ``end`` among it): refused, the record left as it was."""
    import json

    from article_gpt.errors import ConfigError
    from article_gpt.recovery.argv import rewrite_argv

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    record = {"status": "completed", "steps": 8, "tokens_seen": 1024, "end": {"by": "early_stopping", "step": 8}}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError) as err:
        rewrite_argv(["train.py", f"resume={run_dir}", given])
    reached = 8 if given.startswith("trainer") else 1024
    assert str(err.value) == f"{given}: the run already reached {reached}; give more to train {run_dir} further"
    assert rewrite_argv(["train.py", f"resume={run_dir}", "trainer.max_steps=9"])  # one step more is room


@pytest.mark.slow
def test_a_run_that_reaches_max_epochs_says_so(chain):
    m = chain[2]
    assert m["status"] == "completed" and m["steps"] == 6 and m["end"] == {"by": "max_epochs", "step": 6}
