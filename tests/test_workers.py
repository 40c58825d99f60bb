"""The suite's own parallel workers (pyproject's addopts, tests/conftest.py): a test runs on one core
of its own with one torch thread, and so does every process it starts (train.py's `threads: auto`
reads the same affinity); a test marked all_cores holds every core, and no other test runs meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import ALL_CORES, CORE_LOCKS, ROOT, WORKER

pytestmark = pytest.mark.skipif(WORKER is None, reason="only under pytest-xdist workers (pyproject's addopts)")

CORES_OF_A_CHILD = "from article_gpt.parallel.cores import available_cores; print(len(available_cores()))"
TAKE_LOCK = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)"


def held_by_a_test(core: int) -> bool:
    """Another process cannot take this core's lock now."""
    proc = subprocess.run([sys.executable, "-c", TAKE_LOCK, str(CORE_LOCKS / f"{core}.lock")], capture_output=True)
    return proc.returncode != 0


def cores_of_a_child() -> int:
    out = subprocess.run([sys.executable, "-c", CORES_OF_A_CHILD], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_test_has_one_core_and_one_torch_thread():
    (core,) = os.sched_getaffinity(0)
    assert torch.get_num_threads() == 1 and cores_of_a_child() == 1
    assert held_by_a_test(core)  # an all_cores test elsewhere waits for it


@pytest.mark.all_cores
def test_an_all_cores_test_has_the_machine_to_itself():
    assert sorted(os.sched_getaffinity(0)) == ALL_CORES and torch.get_num_threads() == len(ALL_CORES)
    assert cores_of_a_child() == len(ALL_CORES)
    assert all(held_by_a_test(core) for core in ALL_CORES)  # no other worker runs a test meanwhile


@pytest.mark.xdist_group("shared_fixture")
def test_a_grouped_test_is_scheduled_by_its_group(request):
    # --dist loadgroup sends every test whose node id ends in @<group> to the same worker
    assert request.node.nodeid.endswith("@shared_fixture")
