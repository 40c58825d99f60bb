"""Shared fixtures: real entry points in subprocesses, isolated from the user's machine.

Every subprocess gets a fresh HOME (no W&B login, no netrc), a per-test outputs folder and
no WANDB_* variables, so W&B goes offline exactly as on a user's machine without a login.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The tests never have a network: Hugging Face's hub is asked from the local cache only, so a hub
# name fails at once instead of after connection retries (set before huggingface_hub is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A model small enough for a whole run in a few seconds on 2 cores.
TINY = [
    "trainer=debug",
    "model.embedding_dim=32",
    "model.num_layers=2",
    "model.heads=2",
    "model.head_size=16",
    "model.block_size=16",
    "sample.max_new_tokens=8",
]


def isolated_env(home: Path) -> dict[str, str]:
    """The environment without WANDB_* and with an empty HOME at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home.mkdir(parents=True)
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0", NETRC=str(home / ".netrc"))
    return env


def cli_runner(env: dict[str, str], outputs: Path):
    """``run(script, *args)``: ``python <script> *args`` from the repo root in ``env``, train.py's
    outputs under ``outputs``; ``extra_env`` adds variables to this one call."""

    def run(script: str, *args: str, check: bool = True, timeout: float = 300,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / script), *args]
        if script == "train.py":
            cmd.append(f"paths.log_dir={outputs}")
        proc = subprocess.run(cmd, cwd=ROOT, env={**env, **(extra_env or {})}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)  # a prompt would fail, not hang
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    return run


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "home")


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def run_cli(clean_env, outputs):
    """Run ``python <script> *args`` from the repo root with outputs under the test's tmp dir."""
    return cli_runner(clean_env, outputs)


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory):
    """``(run, env, outputs)`` as run_cli, clean_env and outputs, shared by the tests of one module:
    for real runs (seconds each) that several tests inspect."""
    base = tmp_path_factory.mktemp("module_cli")
    outputs = base / "outputs"
    env = isolated_env(base / "home")
    return cli_runner(env, outputs), env, outputs


def run_dirs(outputs: Path) -> list[Path]:
    return sorted(p for p in (outputs / "runs").iterdir() if p.is_dir())


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def wandb_inspect(run_dir: Path, env: dict, summary: bool = False):
    """Read an offline W&B run back with `wandb leet inspect --json` (no network, no mock)."""
    (offline,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    wandb_bin = Path(sys.executable).with_name("wandb")
    args = [str(wandb_bin), "leet", "inspect", "--json", *(["--summary"] if summary else []), str(offline)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=120).stdout
    if summary:
        return json.loads(out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A real single-node SLURM cluster (scripts/slurm_local.sh: idempotent, quick once it is up;
    CI starts it before the tests). Skips with the script's one-line reason where it cannot run
    (not root and not started, no package mirror, ...). Returns the partition name."""
    try:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh")], capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"SLURM not usable: scripts/slurm_local.sh: {exc}")
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        pytest.skip(f"SLURM not usable: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return "debug"
