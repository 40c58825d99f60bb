"""The dashboards built for a sweep: the W&B workspace view (written offline, read back by
wandb-workspaces itself, every key it names present in the real offline runs) and optuna-dashboard
serving a finished search over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, TINY, wandb_inspect

from article_gpt.sweeps import workspace

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_dashboards")]


@pytest.fixture(scope="module")
def sweep(module_cli) -> tuple[Path, dict, Path]:
    """A real 2-job sweep over model.heads, logged to offline W&B: (sweep dir, env, outputs)."""
    run, env, outputs = module_cli
    run("train.py", "-m", *(o for o in TINY if not o.startswith("model.heads=")), "model.heads=2,4")
    (sweep_dir,) = sorted((outputs / "sweeps").iterdir())
    return sweep_dir, env, outputs


def _script(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "wandb_workspace.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _names(metrics) -> list[str]:
    return [m if isinstance(m, str) else m.name for m in metrics]


def test_offline_workspace_is_the_view_of_that_sweep(sweep):
    sweep_dir, env, _ = sweep
    proc = _script(env, str(sweep_dir))
    assert proc.returncode == 0, proc.stderr
    spec_file = sweep_dir / workspace.SPEC_FILE
    assert f"wrote the view for group {sweep_dir.name} to {spec_file}" in proc.stdout
    assert "run the same command again" in proc.stdout

    ws = workspace.read_spec(spec_file)  # the library reads back exactly what save() would send
    assert ws.project == "article-gpt" and ws.name == f"Sweep {sweep_dir.name}"
    assert f"== '{sweep_dir.name}'" in str(ws.runset_settings.filters) and "Group" in str(ws.runset_settings.filters)
    panels = {type(p).__name__ + ":" + p.title: p for s in ws.sections for p in s.panels}
    lines = [p for k, p in panels.items() if k.startswith("LinePlot")]
    assert sorted(_names([p.x])[0] for p in lines) == ["Step", "train/flops"]
    assert all(_names(p.y) == ["val/loss"] for p in lines)
    (coords,) = [p for k, p in panels.items() if k.startswith("ParallelCoordinatesPlot")]
    assert _names(c.metric for c in coords.columns) == ["model.heads", "best_val_loss"]  # swept keys, then the loss
    (scatter,) = [p for k, p in panels.items() if k.startswith("ScatterPlot")]
    assert (scatter.x.name, scatter.y.name) == ("params_non_embedding", "best_val_loss")
    assert ws.runset_settings.pinned_columns == ["run:displayName", "config:model.heads", "summary:best_val_loss",
                                                 "summary:tokens_per_sec", "summary:mfu"]
    outline = json.loads(spec_file.read_text())["outline"]
    assert [p["type"] for p in outline["panels"]] == ["ParallelCoordinatesPlot", "ScatterPlot", "LinePlot", "LinePlot"]


def _keys_read(ws) -> tuple[set[str], set[str]]:
    """(config keys, summary or history keys) that the view's panels and runs table read."""
    config, logged = set(), set()
    for panel in (p for s in ws.sections for p in s.panels):
        metrics = [getattr(panel, "x", None), *(getattr(panel, "y", None) or [])] if isinstance(
            getattr(panel, "y", None), list) else [getattr(panel, "x", None), getattr(panel, "y", None)]
        metrics += [c.metric for c in getattr(panel, "columns", [])]
        for m in filter(None, metrics):
            name = m if isinstance(m, str) else m.name
            (config if type(m).__name__ == "Config" else logged).add(name)
    for column in ws.runset_settings.pinned_columns:
        section, key = column.split(":", 1)
        {"config": config, "summary": logged}.get(section, set()).add(key)
    return config, logged - {"Step"}  # Step: W&B's own x-axis


def test_every_key_the_view_reads_is_in_the_real_runs(sweep):
    """A panel or column on a key W&B never got would be empty: each is in both jobs' offline runs
    (a history key's last value is in the summary too)."""
    sweep_dir, env, _ = sweep
    _script(env, str(sweep_dir))
    config, logged = _keys_read(workspace.read_spec(sweep_dir / workspace.SPEC_FILE))
    assert config == {"model.heads"} and {"val/loss", "train/flops", "params_non_embedding", "mfu"} <= logged
    for job in ("0", "1"):
        got = wandb_inspect(sweep_dir / job, env, summary=True)
        assert logged <= set(got["summary"]), logged - set(got["summary"])
        for key in config:
            node = got["config"]
            for part in key.split("."):
                node = node[part]
            assert node in (2, 4)


def test_a_sweep_id_finds_its_runs_and_a_wrong_one_says_so(sweep):
    sweep_dir, env, outputs = sweep
    (sweep_dir / workspace.SPEC_FILE).unlink(missing_ok=True)
    proc = _script(env, sweep_dir.name, "--outputs", str(outputs))
    assert proc.returncode == 0, proc.stderr
    columns = workspace.read_spec(sweep_dir / workspace.SPEC_FILE).runset_settings.pinned_columns
    assert columns[1] == "config:model.heads"

    proc = _script(env, "no-such-sweep", "--outputs", str(outputs))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: no-such-sweep: no folder of that name, and no run under {outputs} has it as its W&B group"]


@pytest.fixture(scope="module")
def search(module_cli) -> Path:
    """A real 3-trial Optuna search; its study is in the sweep dir's journal file."""
    run, _, outputs = module_cli
    run("train.py", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY,
        "hydra.sweep.dir=" + str(outputs / "search"))
    return outputs / "search"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, attempts: int = 200):
    """GET ``url`` as JSON; the server prints that it listens just before it binds."""
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)  # the socket a moment after the line the server printed: poll the event
    raise AssertionError(f"{url} never answered")


def test_optuna_dashboard_serves_the_finished_search(search, module_cli):
    """The README's command, `optuna-dashboard <sweep>/optuna_journal.log`, on 127.0.0.1."""
    from article_gpt.runs.dirs import OPTUNA_JOURNAL

    _, env, _ = module_cli
    journal = search / OPTUNA_JOURNAL
    assert journal.is_file()
    port = _free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(dashboard), str(journal), "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL)
    try:
        for line in proc.stderr:  # the event: the server says where it listens
            if line.startswith("Listening on"):
                assert f"127.0.0.1:{port}" in line
                break
        studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == [search.name]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
        trials = detail["trials"]
        assert len(trials) == 3 and {t["state"] for t in trials} <= {"Complete", "Pruned"}
        assert all("optim.lr" in {p["name"] for p in t["params"]} for t in trials)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/", timeout=10) as resp:
            assert "<html" in resp.read().decode().lower()  # the page a browser opens
    finally:
        proc.terminate()
        proc.wait(timeout=30)

