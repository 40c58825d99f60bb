"""Security: checkpoints are read with weights_only=True everywhere (a malicious pickle handed to
resume= is refused and never runs), configs are never eval'd, and a W&B API key in the
environment reaches no file that a run or a sweep writes."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
from conftest import ROOT, TINY

FAKE_KEY = secrets.token_hex(20)  # 40 hex digits, like a real key, unique to this session


class RunsCode:
    """Unpickling this calls os.system: what a poisoned checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_every_torch_load_is_weights_only():
    calls = []
    for path in [*ROOT.glob("article_gpt/**/*.py"), *ROOT.glob("scripts/**/*.py"), ROOT / "train.py",
                 ROOT / "generate.py"]:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\((.*?)\)\s*$", text, flags=re.M | re.S):
            calls.append((path.name, match.group(1)))
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), path  # configs are never evaluated
    assert calls and all("weights_only=True" in args for _, args in calls), calls


@pytest.mark.slow
def test_resume_refuses_a_pickle_that_runs_code(run_cli, outputs, tmp_path):
    import torch

    run_cli("train.py", *TINY, "model.num_layers=1", "trainer.max_steps=3", "logger=none", timeout=900)
    (run_dir,) = (outputs / "runs").iterdir()
    marker = tmp_path / "pwned"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, ckpt)  # the poisoned checkpoint
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))

    proc = run_cli("train.py", f"resume={run_dir}", check=False, timeout=900)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {ckpt}: holds pickled Python objects that weights_only=True refuses to load; "
        "not a checkpoint this project wrote")
    assert not marker.exists()  # the payload never ran


@pytest.mark.slow
def test_wandb_api_key_reaches_no_output_file(run_cli, outputs):
    env = {"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"}
    base = [*TINY, "model.num_layers=1", "trainer.max_steps=3"]  # one epoch: a shorter run fails early stopping
    run_cli("tests/interrupt_at.py", "1", "SIGTERM", *base, f"paths.log_dir={outputs}", check=False, extra_env=env,
            timeout=900)
    run_cli("train.py", "resume=latest", extra_env=env, timeout=900)
    run_cli("train.py", "-m", *base, "model.heads=1,2", extra_env=env, timeout=900)
    files = [p for p in outputs.rglob("*") if p.is_file()]
    assert len(files) > 40 and any(p.suffix == ".ckpt" for p in files) and any(p.suffix == ".wandb" for p in files)
    leaks = [str(p) for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert leaks == []
