"""DDP across two SLURM nodes: ``hydra/launcher=submitit_slurm trainer=ddp trainer.num_nodes=2
trainer.devices=1`` (gloo) on partition ``two`` of scripts/slurm_local.sh, two slurmd on this one
machine. One SLURM job of two tasks, one per node; one W&B run; both ranks' tokens; and the same
loss at every step as a 2-rank run on one node. The launcher's ``nodes`` and ``tasks_per_node``
must match ``trainer.num_nodes`` and ``trainer.devices``, checked before anything is launched.
"""

from __future__ import annotations

import re

import pytest
from conftest import ROOT, read_metrics, run_dirs, slurm_partition
from hydra import compose, initialize_config_dir
from test_ddp_resume import DDP_SHAPE
from test_resume import wandb_history

from article_gpt.config.rules import validate
from article_gpt.errors import ConfigError

# 4 steps, one thread a rank on both sides, so the two runs compute the same floats
SHAPE = [a for a in DDP_SHAPE if not a.startswith(("trainer.devices=", "trainer.max_steps="))] + [
    "trainer.max_steps=4", "threads=1"]
TOKENS = 4 * 16 * 16 * 2  # steps x batch x block x ranks


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("overrides, line", [
    (["hydra.launcher.nodes=2"], "hydra.launcher.nodes=2: must equal trainer.num_nodes=1 (one SLURM task per DDP "
                                 "rank); leave hydra.launcher.nodes unset to follow trainer.num_nodes"),
    (["trainer.num_nodes=2", "hydra.launcher.tasks_per_node=2"],
     "hydra.launcher.tasks_per_node=2: must equal trainer.devices=1 (one SLURM task per DDP rank); leave "
     "hydra.launcher.tasks_per_node unset to follow trainer.devices"),
])
def test_launcher_nodes_and_tasks_must_match_the_trainer(overrides, line) -> None:
    cfg = compose_with_hydra("hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=1", *overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg, hydra=cfg.hydra)
    assert str(err.value) == line


def test_launcher_follows_the_trainers_nodes_and_devices() -> None:
    cfg = compose_with_hydra("hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1")
    assert (cfg.hydra.launcher.nodes, cfg.hydra.launcher.tasks_per_node) == (2, 1)
    validate(cfg, hydra=cfg.hydra)
    basic = compose_with_hydra("trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1")
    with pytest.raises(ConfigError, match=r"^trainer.num_nodes=2: more than one node needs hydra/launcher=submitit_"):
        validate(basic, hydra=basic.hydra)  # nothing would start the other node's rank


@pytest.fixture(scope="module")
def two_nodes() -> str:
    """Partition ``two`` of scripts/slurm_local.sh (its two nodes idle), or a skip with its reason."""
    return slurm_partition("two", "two")


@pytest.fixture(scope="module")
def runs(two_nodes, module_cli):
    run, env, outputs = module_cli
    run("train.py", *SHAPE, "trainer.devices=2", timeout=600)
    (one_node,) = run_dirs(outputs)
    run("train.py", "-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={two_nodes}",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", "trainer.num_nodes=2", "trainer.devices=1",
        *SHAPE, timeout=900)
    (sweep,) = (outputs / "sweeps").iterdir()
    return env, one_node, sweep


@pytest.mark.slow
@pytest.mark.all_cores  # two SLURM tasks on this machine's two cores
def test_one_job_on_two_nodes_trains_like_two_ranks_on_one(runs):
    env, one_node, sweep = runs
    (task,) = [p for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    starts = sorted(re.findall(r"node=(\d)\(2\), global_rank=(\d)\(2\)",
                               "".join(p.read_text() for p in task.glob("*_log.*"))))
    assert starts == [("0", "0"), ("1", "1")]  # one SLURM job, one task on each of its two nodes
    m = read_metrics(sweep / "0")
    assert m["status"] == "completed" and m["steps"] == 4 and m["tokens_seen"] == TOKENS  # both ranks' batches
    assert len(list((sweep / "0" / "wandb").glob("offline-run-*"))) == 1  # rank 0's run only
    history = wandb_history(sweep / "0", env)
    assert [s for s, _ in history] == list(range(4))
    assert history == wandb_history(one_node, env)  # the same loss at every step, to the last bit
