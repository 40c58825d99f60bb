"""Sweeps: one W&B run per job grouped by sweep, a summary from disk, failed jobs recorded.

The end-to-end tests run the real ``python train.py -m ...`` and read the offline W&B runs back
with ``wandb leet inspect``; the fast ones build run directories by hand.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from conftest import ROOT, TINY, read_metrics, wandb_inspect
from hand_count import hand_params
from omegaconf import OmegaConf

from article_gpt.runs import naming
from article_gpt.sweeps import records, summary
from article_gpt.sweeps.callbacks import SweepSummary

TINY_NO_HEADS = [o for o in TINY if not o.startswith("model.heads=")]
QUICK = ["logger=none", "callbacks=none", "trainer.max_epochs=1"]  # where only the rows matter
SWEEP_ID = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-[0-9a-f]{6}")


def the_sweep(outputs: Path) -> Path:
    (sweep,) = (outputs / "sweeps").iterdir()
    assert SWEEP_ID.fullmatch(sweep.name), sweep.name
    return sweep


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def fake_run(run_dir: Path, overrides: list[str], status: str = "completed", val_loss: float | None = 5.0,
             write_metrics: bool = True, **extra) -> Path:
    """A run directory as train.py leaves it, without training: .hydra/overrides.yaml and metrics.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if write_metrics:
        metrics = {"status": status, "error": None if status == "completed" else "ConfigError: boom",
                   "val_loss": val_loss, "val_ppl": math.exp(val_loss) if val_loss else None,
                   "params_total": 1_234_567, "tokens_per_sec": 1000.0, "elapsed_s": 75.0,
                   "overrides": overrides, "val_curve": [[0, 10.0], [6, val_loss]] if val_loss else [], **extra}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


# ---------------------------------------------------------------- fast: the comparison itself


def test_swept_keys_are_the_overrides_that_differ(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", ["model.heads=2", "optim.lr=1e-3", "trainer=debug", "paths.log_dir=/x"], val_loss=5.5)
    fake_run(sweep / "1", ["model.heads=4", "optim.lr=1e-3", "trainer=debug", "paths.log_dir=/y"], val_loss=5.1)
    fake_run(sweep / "2", ["model.heads=8", "optim.lr=1e-3", "trainer=debug", "paths.log_dir=/z"],
             status="failed", val_loss=None)
    fake_run(sweep / "10", ["model.heads=16", "optim.lr=1e-3", "trainer=debug", "paths.log_dir=/z"],
             write_metrics=False)

    runs = records.load_runs([sweep])

    # best first, failed and never-finished last; paths.* is where a run wrote, not what it trained
    assert [r.label for r in runs] == ["1", "0", "2", "10"]
    assert [r.swept for r in runs][:2] == [{"heads": "4"}, {"heads": "2"}]
    assert [r.status for r in runs] == ["completed", "completed", "failed", "missing"]
    assert "killed" in runs[3].error
    assert summary.failure_line(runs) == "2 of 4 jobs did not complete (1 failed, 1 missing)"


def test_short_keys_stay_unique() -> None:
    assert naming.short_keys(["model.heads", "optim.lr"]) == {"model.heads": "heads", "optim.lr": "lr"}
    assert naming.short_keys(["model.dropout", "data.dropout"]) == {"model.dropout": "model.dropout",
                                                                       "data.dropout": "data.dropout"}
    # a swept key never shadows a metric column of summary.csv
    assert naming.short_keys(["trainer.steps"]) == {"trainer.steps": "trainer.steps"}


def test_run_without_the_override_shows_its_configured_value(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", ["model.heads=8"])
    b = fake_run(tmp_path / "b", [])
    (b / ".hydra" / "config.yaml").write_text("model:\n  heads: 4\n")
    runs = records.load_runs([a, b])
    assert sorted(r.swept["heads"] for r in runs) == ["4", "8"]


def test_callback_writes_report_and_fails_the_sweep(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "2030-01-01_00-00-00-abcdef"
    fake_run(sweep / "0", ["model.heads=2"], val_loss=5.0)
    fake_run(sweep / "1", ["model.heads=0"], status="failed", val_loss=None)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})

    with pytest.raises(SystemExit) as exc:
        SweepSummary().on_multirun_end(config)
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert "| job | heads |" in out and "1 of 2 jobs failed" in err
    for name in ("summary.csv", "summary.md", "comparison.png"):
        assert (sweep / name).stat().st_size > 0
    rows = read_csv(sweep / "summary.csv")
    assert [(r["heads"], r["status"]) for r in rows] == [("2", "completed"), ("0", "failed")]

    SweepSummary(fail_on_failed_jobs=False).on_multirun_end(config)  # an Optuna search: no exit


def test_two_sweeps_started_in_the_same_second_get_distinct_ids() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.utils import setup_globals

    import article_gpt.config  # noqa: F401  (registers ${uid:})

    setup_globals()  # ${now:}, as hydra.main registers it
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        dirs = [Path(str(compose("train", return_hydra_config=True).hydra.sweep.dir)) for _ in range(2)]
    assert all(SWEEP_ID.fullmatch(d.name) for d in dirs)
    assert dirs[0] != dirs[1]
    assert dirs[0].parent == dirs[1].parent and dirs[0].parent.name == "sweeps"


# ---------------------------------------------------------------- slow: real sweeps


@pytest.mark.slow
def test_sweep_gives_one_wandb_run_per_job_and_a_summary(run_cli, outputs, clean_env) -> None:
    proc = run_cli("train.py", "-m", "model.heads=2,4,8", "tags=[sweep-test]", *TINY_NO_HEADS, timeout=900)
    sweep = the_sweep(outputs)
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2"]
    for job in jobs:
        assert {"metrics.json", "loss.png", "samples.txt", "checkpoints"} <= {p.name for p in job.iterdir()}
        assert read_metrics(job)["group"] == sweep.name

    runs = []
    for job in jobs:
        records = wandb_inspect(job, clean_env)
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        history = {k for r in records if r["type"] == "history" for k in r["history"]["item"]}
        final = wandb_inspect(job, clean_env, summary=True)
        runs.append((run, history, final))

    assert len({run["run_id"] for run, _, _ in runs}) == 3  # never two jobs in one run
    # the swept value reached the model each job built: its size follows heads as the hand count says
    built = {o: read_metrics(j)["params_total"] for j in jobs for o in read_metrics(j)["overrides"]
             if o.startswith("model.heads=")}
    assert built == {f"model.heads={h}": hand_params(50257, 16, 32, 2, h, 16) for h in (2, 4, 8)}
    assert built["model.heads=4"] - built["model.heads=2"] == 2 * 131 * 16 * 2  # per layer: 131 per attention unit
    assert {run["run_group"] for run, _, _ in runs} == {sweep.name}
    assert {run["config"]["update"]["model"]["heads"] for run, _, _ in runs} == {2, 4, 8}
    for job, (run, history, final) in zip(jobs, runs, strict=True):
        heads = run["config"]["update"]["model"]["heads"]
        assert run["display_name"] == f"heads={heads}"  # the swept key only, not the fixed TINY overrides
        assert (run["project"], run["job_type"]) == ("article-gpt", "train")
        derived = run["config"]["update"]
        assert all(derived[k] > 0 for k in ("params_total", "params_non_embedding", "flops_per_token",
                                            "train_tokens", "val_tokens"))
        assert {"train/loss", "val/loss", "val/ppl", "train/lr", "train/tokens_per_sec"} <= history
        assert final["state"] == "finished" and final["exit_code"] == 0
        assert final["tags"] == ["sweep-test"]
        summary = final["summary"]
        assert summary["status"] == "completed" and "val/loss" in summary
        assert summary["best_val_loss"] == pytest.approx(read_metrics(job)["val_loss"])
        assert summary["samples"]["_type"] == "table-file"
        (offline,) = (job / "wandb").glob("offline-run-*")
        table = json.loads((offline / "files" / summary["samples"]["path"]).read_text())
        assert table["columns"] == ["epoch", "step", "prompt", "text"] and table["data"]

    rows = read_csv(sweep / "summary.csv")
    assert sorted(r["heads"] for r in rows) == ["2", "4", "8"]
    losses = [float(r["val_loss"]) for r in rows]
    assert losses == sorted(losses)
    assert (sweep / "comparison.png").stat().st_size > 0
    assert "| job | heads |" in (sweep / "summary.md").read_text()
    assert proc.stdout.rstrip().endswith("comparison.png)")  # the console ends with the summary
    assert "| job | heads |" in proc.stdout


@pytest.mark.slow
def test_cross_product_sweep_gives_one_row_per_combination(run_cli, outputs) -> None:
    run_cli("train.py", "-m", "model.heads=2,4", "optim.lr=1e-3,3e-3", *TINY_NO_HEADS, *QUICK)
    sweep = the_sweep(outputs)
    rows = read_csv(sweep / "summary.csv")
    assert sorted((r["heads"], r["lr"]) for r in rows) == [("2", "0.001"), ("2", "0.003"), ("4", "0.001"),
                                                          ("4", "0.003")]
    assert all(r["status"] == "completed" for r in rows)
    assert not list(sweep.glob("*/wandb"))


@pytest.mark.slow
def test_failed_job_is_recorded_and_the_sweep_goes_on(run_cli, outputs, clean_env) -> None:
    proc = run_cli("train.py", "-m", "model.heads=2,0,4", *TINY_NO_HEADS, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 of 3 jobs failed" in proc.stderr
    sweep = the_sweep(outputs)
    statuses = [read_metrics(j)["status"] for j in job_dirs(sweep)]
    assert statuses == ["completed", "failed", "completed"]
    failed = read_metrics(job_dirs(sweep)[1])
    assert "model.heads=0" in failed["error"] and "\n" not in failed["error"]
    # rejected before anything was built: no W&B run for it; the other jobs have theirs
    assert [bool(list((j / "wandb").glob("offline-run-*"))) for j in job_dirs(sweep)] == [True, False, True]

    rows = read_csv(sweep / "summary.csv")
    assert [r["heads"] for r in rows][-1] == "0" and rows[-1]["status"] == "failed"
    assert "model.heads=0" in rows[-1]["error"]
    assert "model.heads=0" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_job_failing_after_wandb_start_ends_its_run_as_failed(run_cli, outputs, clean_env) -> None:
    # Lightning rejects the combination inside fit, after the W&B run started
    proc = run_cli("train.py", "-m", "trainer.val_check_interval=1000", "logger=wandb", *TINY, check=False)
    assert proc.returncode == 1
    (job,) = job_dirs(the_sweep(outputs))
    metrics = read_metrics(job)
    assert metrics["status"] == "failed" and "val_check_interval" in metrics["error"]
    final = wandb_inspect(job, clean_env, summary=True)
    assert final["exit_code"] == 1 and final["summary"]["status"] == "failed"


@pytest.mark.slow
def test_compare_runs_script_on_two_single_runs(run_cli, outputs, tmp_path) -> None:
    for heads in ("2", "4"):
        run_cli("train.py", f"model.heads={heads}", *TINY_NO_HEADS, *QUICK)
    runs = sorted((outputs / "runs").iterdir())
    report = tmp_path / "report"
    proc = run_cli("scripts/compare_runs.py", *map(str, runs), "--out", str(report))
    assert "| job | heads |" in proc.stdout
    rows = read_csv(report / "summary.csv")
    assert sorted(r["heads"] for r in rows) == ["2", "4"]
    assert {r["job"] for r in rows} == {p.name for p in runs}
    assert (report / "comparison.png").stat().st_size > 0
    assert "2 runs compared" in (report / "summary.md").read_text()


@pytest.mark.slow
def test_sweep_returns_the_optimized_metric(tmp_path: Path) -> None:
    """What a sweeper (Optuna) gets back from each job: the optimized_metric, NaN when it failed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from article_gpt.training.context import RunContext
    from article_gpt.training.run import train

    def run(job: Path, *overrides: str) -> tuple[float, dict]:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True, overrides=[
                *TINY, "logger=none", f"paths.root_dir={ROOT}", f"paths.log_dir={tmp_path}", *overrides])
        with open_dict(cfg):  # what Hydra does for each job before calling main
            cfg.hydra.runtime.output_dir = str(job)
            HydraConfig.instance().set_config(cfg)
            del cfg["hydra"]
        try:
            value = train(cfg, RunContext(job, "sweep", job.name, list(overrides), multirun=True))
        finally:
            HydraConfig.instance().cfg = None
        return value, read_metrics(job)

    value, metrics = run(tmp_path / "0", "optimized_metric=train_loss")
    assert value == pytest.approx(metrics["train_loss"])
    value, metrics = run(tmp_path / "1", "model.heads=0")
    assert math.isnan(value) and metrics["status"] == "failed"


# ---------------------------------------------------------------- scripts/compare_runs.py (README)


def compare_runs_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_compare_runs_rewrites_a_sweeps_report_in_place(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweeps" / "2030-01-01_00-00-00-abcdef"
    fake_run(sweep / "0", ["model.heads=2"], val_loss=5.0)
    fake_run(sweep / "1", ["model.heads=4"], val_loss=6.0)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    main = compare_runs_main()
    assert main([str(sweep)]) == 0
    assert [r["heads"] for r in read_csv(sweep / "summary.csv")] == ["2", "4"]
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    (sweep / "1" / "metrics.json").write_text(json.dumps({**metrics, "val_loss": 4.0}))  # job 1 now best
    assert main([str(sweep)]) == 0
    assert [(r["heads"], r["val_loss"]) for r in read_csv(sweep / "summary.csv")] == [("4", "4.0"), ("2", "5.0")]
    assert "# Sweep 2030-01-01_00-00-00-abcdef" in (sweep / "summary.md").read_text()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.parent == tmp_path) == ["sweeps"]  # nothing beside it
    assert f"report: {sweep / 'summary.md'}" in capsys.readouterr().out


def test_compare_runs_default_output_is_next_to_the_runs_and_never_collides(tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "outputs" / "runs"
    a = fake_run(runs / "2030-01-01_00-00-00-000001-aaaaaa", ["model.heads=2"])
    b = fake_run(runs / "2030-01-01_00-00-00-000002-bbbbbb", ["model.heads=4"], val_loss=4.0)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the current directory gets nothing
    main = compare_runs_main()
    for _ in range(2):  # the same second: two folders all the same
        assert main([str(a), str(b)]) == 0
    reports = sorted((runs / "comparisons").iterdir())
    assert len(reports) == 2 and all(SWEEP_ID.fullmatch(r.name) for r in reports)  # time + uid
    for report in reports:
        assert [r["heads"] for r in read_csv(report / "summary.csv")] == ["4", "2"]
        assert (report / "comparison.png").stat().st_size > 0
    assert not list(elsewhere.iterdir()) and not (ROOT / "outputs" / "comparisons" / reports[0].name).exists()
    assert records.load_runs([runs])[0].run_dir == b  # a comparison is never taken for a run
    main([str(a)])  # a single run: beside it, not inside it
    assert len(list((runs / "comparisons").iterdir())) == 3 and not (a / "comparisons").exists()


@pytest.mark.slow
def test_nan_loss_is_recorded_and_the_sweep_goes_on(run_cli, outputs, clean_env) -> None:
    """README: a job with a NaN loss is recorded as failed (one-line error in metrics.json, the
    traceback in error.log, its W&B run failed) and the sweep goes on. The next job diverges without
    a NaN: a val loss far above 709, whose exp overflows; its run still closes completed, with
    val_ppl null and its W&B run finished."""
    diverge = ["optim.lr=10", "optim.weight_decay=10", "optim.warmup_steps=0", "trainer.max_epochs=20",
               "callbacks.early_stopping.check_finite=false"]  # decoupled decay x(1 - lr*wd) = x(-99) a step
    proc = run_cli("train.py", "-m", "trainer.max_steps=60,3", *TINY, *diverge, check=False, timeout=900)
    assert proc.returncode == 1, proc.stderr[-2000:]
    nan_job, diverged = job_dirs(the_sweep(outputs))
    failed = read_metrics(nan_job)
    assert failed["status"] == "failed" and "\n" not in failed["error"]
    assert re.match(r"NonFiniteLossError: train/loss is (nan|inf) at step \d+", failed["error"]), failed["error"]
    log = (nan_job / "error.log").read_text()
    assert log.startswith("Traceback (most recent call last):") and "NonFiniteLossError" in log.splitlines()[-1]
    assert wandb_inspect(nan_job, clean_env, summary=True)["exit_code"] == 1

    done = read_metrics(diverged)  # the sweep went on
    assert done["status"] == "completed" and done["val_loss"] > 709 and done["val_ppl"] is None
    final = wandb_inspect(diverged, clean_env, summary=True)
    assert final["state"] == "finished" and final["exit_code"] == 0
    assert final["summary"]["best_val_loss"] == pytest.approx(done["val_loss"])
