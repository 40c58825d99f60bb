"""A job whose process dies outright (SIGKILL as the OOM killer sends it, a segfault) under joblib,
submitit_local and submitit_slurm: recorded failed with how it died, the rest of the sweep runs
(the job beside it under joblib included), the summary is written and the sweep exits 1.

The job kills itself at step 2 (tests/probes.py DieAtStep, added as config so that it runs in
whichever process the launcher gives the job); nothing of ours runs between the signal and the death.
"""

from __future__ import annotations

import csv

import pytest
from conftest import PROBES, TINY, read_metrics

from article_gpt.runs.record import Status
from article_gpt.sweeps.launchers import how_it_ended

TINY_NO_HEADS = [o for o in TINY if not o.startswith("model.heads=")]


def test_how_a_dead_job_ended_is_one_line():
    assert how_it_ended(-9) == (Status.FAILED, "the job's process was killed by SIGKILL "
                                               "(the kernel's OOM killer sends it too: see dmesg)")
    assert how_it_ended(-11)[1].endswith("SIGSEGV (a crash in native code)")
    assert how_it_ended(130)[0] is Status.INTERRUPTED and how_it_ended(3)[1].endswith("code 3 and left no result")


def launcher_args(request, launcher: str) -> list[str]:
    if launcher == "joblib":
        return ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    if launcher == "submitit_local":
        return ["hydra/launcher=submitit_local"]
    partition = request.getfixturevalue("slurm_cluster")
    return ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={partition}",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.tasks_per_node=1", "hydra.launcher.timeout_min=10"]


@pytest.mark.slow
@pytest.mark.all_cores  # parallel jobs share out the machine's cores
@pytest.mark.parametrize("launcher, sig", [("joblib", "SIGKILL"), ("submitit_local", "SIGSEGV"),
                                           ("submitit_slurm", "SIGKILL")])
def test_a_job_that_dies_is_recorded_and_the_sweep_goes_on(request, run_cli, outputs, launcher, sig):
    die = f"+callbacks.die={{_target_:probes.DieAtStep,step:2,signal:{sig},job:0}}"
    proc = run_cli("train.py", "-m", *launcher_args(request, launcher), "model.heads=2,1,4", *TINY_NO_HEADS,
                   "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0", "logger=none", die,
                   check=False, timeout=600, extra_env=PROBES)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 3 jobs failed" in proc.stderr and "| job | heads |" in proc.stdout
    (sweep,) = (outputs / "sweeps").iterdir()
    dead = read_metrics(sweep / "0")
    assert dead["status"] == "failed" and dead["name"] == "heads=2" and dead["group"] == sweep.name
    # the joblib worker waits on the job's own process; submitit knows a state, not the signal
    assert (f"killed by {sig}" if launcher == "joblib" else "died and left no result") in dead["error"]
    assert dead["error"] in (sweep / "0" / "error.log").read_text()
    for job in ("1", "2"):  # job 1 ran beside the dead one; job 2 started after it
        assert read_metrics(sweep / job)["status"] == "completed"
    with (sweep / "summary.csv").open(newline="") as f:
        rows = {r["heads"]: r["status"] for r in csv.DictReader(f)}
    assert rows == {"2": "failed", "1": "completed", "4": "completed"}
