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


CODE = ["article_gpt/**/*.py", "scripts/**/*.py", "hydra_plugins/**/*.py", "train.py", "generate.py"]
# every way Python, torch, numpy and YAML run code from what they load, and evaluating text
UNSAFE_LOADERS = {
    "pickle": r"\b(c?pickle|cloudpickle|dill|joblib|marshal|shelve)\.(loads?|Unpickler|open)\(",
    "pandas pickle": r"\bread_pickle\(",
    "TorchScript": r"\btorch\.jit\.load\(",
    "numpy pickle": r"allow_pickle\s*=\s*True",
    "YAML objects": r"\byaml\.(unsafe_load|full_load|load_all|load)\((?![^)]*SafeLoader)",
    "eval/exec": r"(?<![\w.])(eval|exec)\(",
}
# trusted by construction: a sweep job's result from the job's own forked process, over a pipe
ALLOWED = {("article_gpt/sweeps/launchers.py", "pickle")}


def code_files() -> list[Path]:
    return sorted({p for pattern in CODE for p in ROOT.glob(pattern)})


def test_every_torch_load_is_weights_only():
    calls = []
    for path in code_files():
        for match in re.finditer(r"torch\.load\((.*?)\)\s*$", path.read_text(), flags=re.M | re.S):
            calls.append((path.name, match.group(1)))
    assert calls and all("weights_only=True" in args for _, args in calls), calls


def test_no_unsafe_loader_anywhere_in_the_code():
    found = []
    for path in code_files():
        rel = str(path.relative_to(ROOT))
        for kind, pattern in UNSAFE_LOADERS.items():
            found += [f"{rel}: {m.group(0)} ({kind})" for m in re.finditer(pattern, path.read_text())
                      if (rel, kind) not in ALLOWED]
    assert any(p.parts[-2] == "article_gpt_launchers" for p in code_files())  # hydra_plugins/ is read
    assert found == []


@pytest.mark.parametrize("line, kind", [
    ("state = pickle.load(f)", "pickle"), ("cloudpickle.loads(b)", "pickle"), ("joblib.load(p)", "pickle"),
    ("pd.read_pickle(p)", "pandas pickle"), ("m = torch.jit.load(p)", "TorchScript"),
    ("np.load(p, allow_pickle=True)", "numpy pickle"), ("yaml.load(text)", "YAML objects"),
    ("yaml.load(text, Loader=yaml.FullLoader)", "YAML objects"), ("eval(cfg.expr)", "eval/exec")])
def test_the_grep_sees_each_loader(line, kind):
    assert re.search(UNSAFE_LOADERS[kind], line)
    assert not re.search(UNSAFE_LOADERS["YAML objects"], "yaml.load(text, Loader=yaml.SafeLoader)")


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
