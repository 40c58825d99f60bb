"""W&B Sweeps: sweeps/grid.yaml and sweeps/bayes.yaml drive ordinary `python train.py` runs.

The agent test does not imitate the agent: a subprocess builds wandb's own ``Agent`` and hands it
a "run" command, as the W&B server would send it, so wandb's code expands ``${env}`` and
``${args_no_hyphens}``, sets WANDB_RUN_ID and the sweep's parameter file, and starts the run. Only
the server is left out (there is none offline); the run's W&B files are read back with
``wandb leet inspect``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, read_metrics, wandb_inspect
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from article_gpt.config.rules import validate

SWEEPS = {name: ROOT / "sweeps" / f"{name}.yaml" for name in ("grid", "bayes")}
SEARCHED = {"model.heads", "model.head_size", "model.embedding_dim", "model.block_size", "optim.lr"}

# Runs in its own process: the agent writes os.environ (WANDB_RUN_ID, WANDB_SWEEP_PARAM_PATH).
AGENT_DRIVER = """
import json, sys, yaml
from wandb.wandb_agent import Agent

sweep = yaml.safe_load(open(sys.argv[1]))
agent = Agent(api=None, queue=None, sweep_id="{sweep_id}")
agent._sweep_command = sweep["command"]
agent._command_run({{"type": "run", "run_id": "{run_id}", "program": sweep["program"],
                     "args": {{k: {{"value": v}} for k, v in json.loads(sys.argv[2]).items()}}}})
proc = agent._run_processes["{run_id}"]
print("COMMAND " + json.dumps(proc._popen.args), flush=True)
sys.exit(proc._popen.wait())
"""


def load(name: str) -> dict:
    return yaml.safe_load(SWEEPS[name].read_text())


def a_value(spec: dict):
    """One value the sweep could propose for a parameter: the first listed, or the range's low end."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][0]
    return spec["min"]


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_yaml_runs_train_py_and_every_parameter_is_a_config_key(name, tmp_path):
    sweep = load(name)
    assert sweep["method"] == name
    assert sweep["metric"] == {"name": "best_val_loss", "goal": "minimize"}
    assert sweep["command"] == ["${env}", "python", "train.py", "${args_no_hyphens}"]
    params = sweep["parameters"]
    assert SEARCHED <= set(params)
    assert all(len(params[k].get("values", [])) > 1 or "distribution" in params[k] for k in SEARCHED)
    # every value the sweep can propose is an override train.py takes and validates
    variants = [{k: spec["values"][i] if "values" in spec else a_value(spec) for k, spec in params.items()}
                for i in (0, -1)]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for chosen in variants:
            overrides = [f"{k}={v}" for k, v in chosen.items()]  # as the agent writes them
            cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])
            validate(cfg)
            for key, value in chosen.items():
                assert OmegaConf.select(cfg, key) == pytest.approx(value), key


@pytest.mark.slow
def test_the_agent_command_line_runs_and_logs_into_the_sweep_group(clean_env, tmp_path):
    sweep_id, run_id = "swp4h7x2", "agentrun01"
    outputs = tmp_path / "outputs"
    sweep = load("bayes")
    # the sweep's parameters, at tiny values, plus settings a user would fix with `value:` entries
    fixed = dict(o.split("=", 1) for o in TINY if not o.startswith(tuple(sweep["parameters"])))
    args = {"model.heads": 2, "model.head_size": 16, "model.embedding_dim": 32, "model.block_size": 16,
            "optim.lr": 0.0021, "budget.flops": 1.0e10, "callbacks.early_stopping.patience": 1000,
            **fixed, "paths.log_dir": str(outputs)}
    assert set(sweep["parameters"]) <= set(args)
    env = {**clean_env, "WANDB_SWEEP_ID": sweep_id, "WANDB_PROJECT": "article-gpt",  # as `wandb agent` sets them
           "WANDB_DIR": str(tmp_path / "agent"), "PATH": f"{Path(sys.executable).parent}:{clean_env['PATH']}"}
    driver = AGENT_DRIVER.format(sweep_id=sweep_id, run_id=run_id)
    proc = subprocess.run([sys.executable, "-c", driver, str(SWEEPS["bayes"]), json.dumps(args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    command = json.loads(next(line[8:] for line in proc.stdout.splitlines() if line.startswith("COMMAND ")))
    assert command[:3] == ["/usr/bin/env", "python", "train.py"]
    assert command[3:] == [f"{k}={v}" for k, v in args.items()]  # key=value, no dashes: Hydra overrides

    (run_dir,) = (outputs / "runs").iterdir()
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["group"] == sweep_id and metrics["wandb_run_id"] == run_id
    assert metrics["tokens_seen"] > 0 and metrics["train_flops"] >= 1.0e10

    (record,) = [r["run"] for r in wandb_inspect(run_dir, clean_env) if r["type"] == "run"]
    assert record["run_group"] == sweep_id and record["run_id"] == run_id
    assert record["config"]["update"]["model"]["heads"] == 2  # Hydra applied the agent's arguments
    final = wandb_inspect(run_dir, clean_env, summary=True)
    assert final["state"] == "finished" and final["exit_code"] == 0
    # the sweep's metric is in the run's summary, where the W&B controller reads it
    assert final["summary"][sweep["metric"]["name"]] == pytest.approx(metrics["val_loss"])
    assert final["summary"]["train_flops"] == metrics["train_flops"]
