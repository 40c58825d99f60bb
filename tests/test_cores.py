"""Cores really pinned: under hydra/launcher=joblib hydra.launcher.n_jobs=2 on 2 cores, the two jobs
run at the same time on disjoint cores, as the kernel sees it from inside each job
(os.sched_getaffinity of the training thread, read during a training step), and the step runs with
the torch thread count that the job's share allows (torch.get_num_threads() read there too).

Each job writes what it sees at step 2 (tests/probes.py CoresProbe), after jobs 0 and 1 have both
reached step 1 (HoldAtStep): both are alive when each reads its cores. Job 2 runs after them in a
worker that ran one of them: a worker's start-up (torch and Lightning imported) is paid once per
worker, and each job's process is forked from it with those imports loaded.
"""

from __future__ import annotations

import json

import pytest
from conftest import ALL_CORES, PROBES, TINY, read_metrics

TINY_NO_HEADS = [o for o in TINY if not o.startswith("model.heads=")]


@pytest.mark.slow
@pytest.mark.all_cores  # the jobs split the machine's cores between them
@pytest.mark.skipif(len(ALL_CORES) != 2, reason="the promise is for a machine of 2 cores")
def test_parallel_jobs_train_on_disjoint_cores_with_their_share_of_threads(run_cli, outputs, tmp_path):
    held, seen = tmp_path / "held", tmp_path / "seen"
    run_cli("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.heads=1,2,4", *TINY_NO_HEADS,
            "model.num_layers=1", "trainer.max_steps=3", "callbacks.progress_bar.refresh_rate=0", "logger=none",
            f"+callbacks.hold={{_target_:probes.HoldAtStep,folder:{held},step:1,jobs:2}}",
            f"+callbacks.cores={{_target_:probes.CoresProbe,folder:{seen},step:2}}", extra_env=PROBES, timeout=600)
    jobs = {p.stem: json.loads(p.read_text()) for p in seen.iterdir()}
    assert sorted(jobs) == ["0", "1", "2"] and len({j["pid"] for j in jobs.values()}) == 3
    assert len({j["ppid"] for j in jobs.values()}) <= 2  # 2 loky workers for 3 jobs: one was reused
    assert all(j["parent_has_torch"] for j in jobs.values())  # imported by the worker, not by each job
    (a,), (b,) = jobs["0"]["affinity"], jobs["1"]["affinity"]  # one core each
    assert a != b and {a, b} == set(ALL_CORES)
    assert jobs["2"]["affinity"] in ([a], [b])
    assert all(j["torch_threads"] == 1 for j in jobs.values())
    (sweep,) = (outputs / "sweeps").iterdir()
    for job, cores in jobs.items():  # and each record says what the job ran with
        m = read_metrics(sweep / job)
        assert m["pinned_cores"] == cores["affinity"] and m["threads"] == 1
