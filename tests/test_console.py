"""What a run prints and what its train.log keeps (article_gpt/tracking/console.py).

One real run (W&B offline, as on a machine without a login), with an ``srun`` on PATH as on a
SLURM login node, read three ways: each Lightning line once on the console, no third-party tips,
and train.log holding Lightning's lines, the end-of-run summary and the ``wandb sync`` command.
And a sweep of one job, whose job imports Lightning only after Hydra set up its logging.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, run_dirs

pytestmark = pytest.mark.slow

LIGHTNING_LINES = ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
                   "Loading `train_dataloader` to estimate number of stepping batches.",
                   "`Trainer.fit` stopped: `max_steps=6` reached.")
TIP_WORDS = ("litlogger", "litmodels", "💡", "srun")
SUMMARY = ("run dir:", "status:", "best val loss:", "throughput:", "compute:", "sample:")


@pytest.fixture(scope="module")
def run(module_cli, tmp_path_factory):
    """``(proc, run_dir, train_log)`` of one tiny run with W&B offline and an srun on PATH."""
    cli, env, outputs = module_cli
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{env['PATH']}"
    assert shutil.which("srun", path=path)  # Lightning's hint needs one: the test would prove nothing
    proc = cli("train.py", *TINY, extra_env={"PATH": path})
    (run_dir,) = run_dirs(outputs)
    return proc, run_dir, (run_dir / "train.log").read_text()


@pytest.fixture(scope="module")
def sweep_job(module_cli):
    """``(proc, train_log)`` of a sweep of one job: Lightning is first imported inside the job."""
    cli, _, outputs = module_cli
    proc = cli("train.py", "-m", *TINY, "logger=none", "seed=1")
    (log,) = (outputs / "sweeps").glob("*/0/train.log")
    return proc, log.read_text()


@pytest.mark.parametrize("fixture", ["run", "sweep_job"])
def test_each_lightning_line_prints_once(request, fixture):
    proc, log = request.getfixturevalue(fixture)[0], request.getfixturevalue(fixture)[-1]
    console = proc.stdout + proc.stderr
    for line in LIGHTNING_LINES:
        assert console.count(line) == 1, f"{line!r} printed {console.count(line)} times\n{console[-3000:]}"
        assert line in log
    assert not re.search(r"^INFO: ", proc.stderr, re.M), proc.stderr  # Lightning's own handler's format


def test_no_third_party_tips(run):
    proc, _, log = run
    for where, text in (("stdout", proc.stdout), ("stderr", proc.stderr), ("train.log", log)):
        shown = [line for line in text.splitlines() if any(word in line for word in TIP_WORDS)]
        assert not shown, f"{where}: {shown}"


def test_train_log_keeps_lightning_lines_the_summary_and_the_sync_command(run):
    proc, run_dir, log = run
    messages = [line.split(" - ", 1)[1] for line in log.splitlines() if " - " in line]
    for line in LIGHTNING_LINES:
        assert line in messages, log
    summary = [line for line in proc.stdout.splitlines() if line.startswith(SUMMARY)]
    assert [line.split(":")[0] + ":" for line in summary] == list(SUMMARY), proc.stdout[-2000:]  # as printed today
    for line in summary:
        assert line in messages, f"{line!r} not in train.log\n{log}"
    wandb_dir = read_metrics(run_dir)["wandb_dir"]
    assert Path(wandb_dir).is_dir()
    assert any(m.endswith(f"wandb sync {wandb_dir}") for m in messages), log
    assert proc.stdout.count(f"wandb sync {wandb_dir}") == 1  # the console line stays where it was, once
    assert not any(line in proc.stdout.replace(line, "", 1) for line in summary)  # summary printed once
