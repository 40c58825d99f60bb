"""Shared fixtures: real entry points in subprocesses, isolated from the user's machine.

Every subprocess gets a fresh HOME (no W&B login, no netrc), a per-test outputs folder and
no WANDB_* variables, so W&B goes offline exactly as on a user's machine without a login.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a job's env for the test callbacks of tests/probes.py, added as config (+callbacks.<name>={_target_:probes...})
PROBES = {"PYTHONPATH": str(ROOT / "tests")}
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


def wandb_offline_ids(run_dir: Path) -> list[str]:
    """The W&B run id of each offline run file in ``run_dir`` (one per attempt), in file order."""
    return [p.name.rsplit("-", 1)[-1] for p in sorted((run_dir / "wandb").glob("offline-run-*"))]


def wandb_inspect(run_dir: Path, env: dict, summary: bool = False, attempt: int | None = None):
    """Read an offline W&B run back with `wandb leet inspect --json` (no network, no mock); a
    resumed run has a file for each attempt: ``attempt`` picks one (0 = the first)."""
    files = sorted((run_dir / "wandb").glob("offline-run-*"))
    (offline,) = files if attempt is None else [files[attempt]]
    wandb_bin = Path(sys.executable).with_name("wandb")
    args = [str(wandb_bin), "leet", "inspect", "--json", *(["--summary"] if summary else []), str(offline)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=120).stdout
    if summary:
        return json.loads(out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def slurm_partition(partition: str, *script_args: str) -> str:
    """``partition`` of the real SLURM cluster scripts/slurm_local.sh starts (idempotent, quick once
    it is up; CI starts it before the tests), or a skip with the script's one-line reason where it
    cannot run (not root and not started, no package mirror, ...)."""
    what = " ".join(["scripts/slurm_local.sh", *script_args])
    try:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh"), *script_args], capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"SLURM partition {partition} not usable: {what}: {exc}")
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        pytest.skip(f"SLURM partition {partition} not usable: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return partition


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A real single-node SLURM cluster: its partition's name."""
    return slurm_partition("debug")


# ---------------------------------------------------------------- parallel workers (pytest-xdist)
# pyproject's addopts runs the suite on 2 pytest-xdist workers. Two processes each with torch's
# default of one thread per core ran each step 3.4x slower here, so every test gets a core of its
# own: its worker is pinned to one core (os.sched_setaffinity, inherited by every subprocess the
# test starts, where `threads: auto` then gives torch 1 thread) and holds that core's lock while
# the test runs (its module's fixtures included). A test marked `all_cores` (DDP ranks, parallel
# joblib jobs, SLURM jobs, the machine's core count in a message) takes every core's lock, so it
# runs alone on the whole machine, exactly as without workers.
ALL_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... in a worker; unset without xdist
# One folder for the whole machine: two test sessions at once share the cores the same way.
CORE_LOCKS = Path(tempfile.gettempdir()) / "article-gpt-test-cores"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker for each core this session may use (taskset included)."""
    return max(1, len(ALL_CORES))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items: list[pytest.Item]) -> None:
    """In a worker: the all_cores tests first, run one after another while no long test holds the
    other core; then the slow ones, so that the last tests to start are short and the workers end
    together. Tests marked ``xdist_group(name)`` (those sharing an expensive module fixture) go to
    one worker. (--dist loadscope, one module a worker, measured slower.)"""
    if WORKER is not None:  # a stable sort: else as collected
        group_by_xdist_group(config, items)
        items.sort(key=lambda item: (not item.get_closest_marker("all_cores"), not item.get_closest_marker("slow")))


def group_by_xdist_group(config, items: list[pytest.Item]) -> None:
    """--dist loadgroup sends tests whose node id ends in ``@<group>`` to one worker. xdist 3.8
    appends it by setting ``item._nodeid``, which pytest 9.2 no longer reads (its node id is
    ``item._id``), so no test was grouped: append it where pytest reads it."""
    if not config.getvalue("loadgroup"):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix):
            item._id = coerce_node_id(item.nodeid + suffix)


def worker_cores(item: pytest.Item) -> list[int]:
    if item.get_closest_marker("all_cores"):
        return ALL_CORES
    return [ALL_CORES[int(WORKER.removeprefix("gw")) % len(ALL_CORES)]]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    if WORKER is None or not ALL_CORES:
        yield
        return
    import torch

    cores = worker_cores(item)
    CORE_LOCKS.mkdir(exist_ok=True)
    locks = []
    for core in cores:  # in ascending order: two tests never wait on each other in a cycle
        fd = os.open(CORE_LOCKS / f"{core}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        locks.append(fd)
    os.sched_setaffinity(0, cores)
    threads = torch.get_num_threads()
    torch.set_num_threads(len(cores))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, ALL_CORES)
        for fd in locks:
            os.close(fd)  # closing the descriptor releases its lock
