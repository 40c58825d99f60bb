"""A sweep's analysis: seeds as one configuration, parameter importance, pictures that read at a glance.

One real sweep (``seed=1,2`` x two block sizes, tiny shapes) is shared by the module; the
formatting rules are checked on Run objects built from its real records, with their swept values
or losses changed where a rule needs other numbers (a search's learning rates, a close race).
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from omegaconf import OmegaConf

from article_gpt.sweeps import importance, plot, records, seeds, summary
from article_gpt.sweeps.records import Run
from article_gpt.tracking.recorder import RunRecorder
from article_gpt.tracking.report import loss_figure

SWEEP = [*(o for o in TINY if not o.startswith("model.block_size=")), "logger=none", "callbacks=none",
         "trainer.max_epochs=1", "seed=1,2", "model.block_size=8,16"]
# every test reads the module's real sweep (about a minute on an idle core), run once on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_sweep_analysis")]
LONG_LR = "0.0015151446654565377"  # an Optuna-sampled learning rate, as a trial's override has it


@pytest.fixture(scope="module")
def sweep(module_cli) -> tuple[Path, str]:
    """The real sweep's folder and its console output."""
    run, _, outputs = module_cli
    proc = run("train.py", "-m", *SWEEP, timeout=900)  # four jobs: minutes on a busy machine
    (sweep_dir,) = (outputs / "sweeps").iterdir()
    return sweep_dir, proc.stdout


@pytest.fixture
def runs(sweep) -> list[Run]:
    """The sweep's runs, read from disk afresh for each test (tests change copies of them)."""
    return records.load_runs([sweep[0]])


def with_values(runs: list[Run], swept: list[dict[str, str]], losses: list[float] | None = None) -> list[Run]:
    """Copies of the real runs (cycled), with these swept values and best val losses."""
    out = []
    for i, values in enumerate(swept):
        r = copy.deepcopy(runs[i % len(runs)])
        r.swept, r.swept_keys = dict(values), {k: {"lr": "optim.lr"}.get(k, k) for k in values}
        if losses is not None:
            r.metrics["val_loss"] = losses[i]
        out.append(r)
    return out


def drawn(fig):
    fig.draw_without_rendering()  # tick labels, offsets and legends as they are saved
    return fig


def axis_named(fig, label: str):
    (ax,) = [a for a in fig.axes if a.get_xlabel() == label]
    return ax


# ---------------------------------------------------------------- seeds


def test_seeds_of_a_real_sweep_are_one_configuration(sweep, runs) -> None:
    sweep_dir, stdout = sweep
    configs = seeds.configurations(runs)
    assert [c.swept for c in configs] in ([{"block_size": "8"}, {"block_size": "16"}],
                                          [{"block_size": "16"}, {"block_size": "8"}])
    for c in configs:
        assert c.seeds == ["1", "2"] and c.n() == 2
        assert c.mean() == pytest.approx(statistics.fmean(r.val_loss for r in c.runs))
        assert c.std() == pytest.approx(statistics.stdev(r.val_loss for r in c.runs))
    assert configs[0].mean() <= configs[1].mean()  # ranked by the mean

    md = (sweep_dir / "summary.md").read_text()
    assert "## Seeds" in md and seeds_rule_named(md)
    best = configs[0]
    row = f"| 1 | {best.swept['block_size']} | {best.mean():.4f} | {best.std():.4f} | 2 of 2 | 1,2 | best |"
    assert row in md and row in stdout  # the console shows the seeds table too
    rows = [r for r in summary_csv(sweep_dir)]
    assert {(r["block_size"], r["config_n"], r["config_rank"]) for r in rows} == {
        (c.swept["block_size"], "2", str(i)) for i, c in enumerate(configs, 1)}
    assert "## What mattered" not in md  # one swept key besides the seed: nothing to split


def seeds_rule_named(md: str) -> bool:
    return "smaller than the larger of their two standard deviations" in md


def summary_csv(sweep_dir: Path) -> list[dict[str, str]]:
    import csv

    with (sweep_dir / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_gap_within_the_seed_spread_is_not_distinguishable(runs) -> None:
    # A: 5.00/5.02 (std 0.0141); B: 5.01/5.03, 0.01 behind; C: 5.03/5.05, 0.03 behind; D: one seed
    values = [{"heads": h, "seed": s} for h in "ABCD" for s in "12"][:7]
    race = with_values(runs, values, [5.00, 5.02, 5.01, 5.03, 5.03, 5.05, 5.005])
    configs = seeds.configurations(race)
    assert [c.name for c in configs] == ["heads=D", "heads=A", "heads=B", "heads=C"]
    table = summary.seeds_table(configs)
    # D (one seed) takes the pooled std, 0.0141: A, 0.005 behind, is within it
    assert seeds.pooled_std(configs) == pytest.approx(0.0141421, rel=1e-4)
    assert "| 2 | A | 5.0100 | 0.0141 | 2 of 2 | 1,2 | ≈ best (+0.0050) |" in table
    assert "| 3 | B | 5.0200 | 0.0141 | 2 of 2 | 1,2 | +0.0150 |" in table
    assert "| 4 | C | 5.0400 | 0.0141 | 2 of 2 | 1,2 | +0.0350 |" in table
    assert seeds.distinguishable(configs[1], configs[0], configs) is False


# ---------------------------------------------------------------- importance


def test_importance_of_a_grid_is_measured_on_the_means(runs) -> None:
    grid = [{"lr": lr, "block_size": b, "seed": s} for lr in ("0.001", "0.01") for b in ("8", "16") for s in "12"]
    losses = [6.0 + (lr == "0.01") * 1.0 + (b == "16") * 0.1 + int(s) * 0.01 for lr, b, s in
              ((g["lr"], g["block_size"], g["seed"]) for g in grid)]
    runs8 = with_values(runs, grid, losses)
    configs = seeds.configurations(runs8)
    built = importance.study(runs8, configs)
    assert len(built.trials) == 4  # one trial per configuration, never per seed
    assert sorted(t.value for t in built.trials) == pytest.approx(sorted(c.mean() for c in configs))
    dists = built.trials[0].distributions
    assert set(dists) == {"lr", "block_size"} and dists["lr"].log and not dists["block_size"].log

    md = summary.summary_markdown("grid", runs8)
    evaluator = importance._evaluator(4)[1]
    assert f"(optuna.importance, evaluator {evaluator})" in md and "| lr | " in md
    result = importance.importance(runs8, configs)
    assert list(result.scores)[0] == "lr"  # the key that moved the loss by a nat


def test_importance_needs_two_keys_and_enough_configurations(runs) -> None:
    three = with_values(runs, [{"lr": lr, "block_size": "8"} for lr in ("0.001", "0.003", "0.01")], [6.0, 5.5, 5.8])
    assert importance.study(three, seeds.configurations(three)) is None  # one key varies
    few = with_values(runs, [{"lr": "0.001", "block_size": "8"}, {"lr": "0.01", "block_size": "16"},
                             {"lr": "0.01", "block_size": "8"}], [6.0, 5.5, 5.8])
    assert importance.MIN_CONFIGURATIONS == 4 and importance.study(few, seeds.configurations(few)) is None
    assert "needs at least 4 configurations with a result; this sweep has 3" in summary.summary_markdown("few", few)


# ---------------------------------------------------------------- pictures and numbers


def test_comparison_picture_reads_at_a_glance(runs) -> None:
    # losses a few 1e-5 apart: matplotlib would write "1e-5+1.0224e1" above the panels' axes
    close = with_values(runs, [r.swept for r in runs], [10.2240 + i * 1e-5 for i in range(len(runs))])
    for fig in drawn(plot.comparison_figure(close, "close")), drawn(plot.comparison_figure(runs, "a real sweep")):
        for ax in fig.axes:  # plain tick values: no offset or multiplier above any axis
            assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    assert "seed" not in [ax.get_xlabel() for ax in fig.axes]  # seeds are averaged, not an axis
    curves = axis_named(fig, "tokens seen")  # block sizes 8 and 16: different tokens per step
    labels = curves.get_legend_handles_labels()[1]
    assert sorted(labels) == ["block_size=16 (2 seeds)", "block_size=8 (2 seeds)"]  # swept values, not jobs
    run = runs[0]
    line = next(ln for ln in curves.get_lines() if ln.get_label().startswith(f"block_size={run.swept['block_size']}"))
    per_step = run.metrics["tokens_seen"] / run.metrics["steps"]
    assert set(line.get_xdata()) <= {s * per_step for s, _ in c_curves(runs, run.swept["block_size"])}
    assert_legends_cover_no_points(fig)


def c_curves(runs: list[Run], block_size: str) -> list:
    return [p for r in runs if r.swept["block_size"] == block_size for p in r.metrics["val_curve"]]


def assert_legends_cover_no_points(fig) -> None:
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent()
        for line in ax.get_lines():
            pts = line.get_transform().transform(line.get_xydata())
            if line.get_linestyle() not in ("None", ""):  # a drawn line: the points along its segments too
                pts = [a + (b - a) * t for a, b in zip(pts, pts[1:]) for t in np.linspace(0, 1, 50)] or pts
            for x, y in pts:
                assert not box.contains(x, y), f"{ax.get_xlabel()}: the legend covers a point of {line.get_label()}"


def test_a_searched_learning_rate_is_a_log_axis_with_rounded_ticks(runs, tmp_path: Path) -> None:
    lrs = [LONG_LR, "0.00031622776601683794", "0.0028117066259517456", "0.00012345678901234567",
           "0.00071968567300115", "0.0021", "0.00047", "0.0011", "0.0017", "0.00026"]
    search = with_values(runs, [{"lr": lr, "heads": h} for lr, h in zip(lrs, "2424242424")],
                         [6.0 - i * 0.01 for i in range(len(lrs))])
    lr_axis = axis_named(drawn(plot.comparison_figure(search, "a search")), "lr")
    assert lr_axis.get_xscale() == "log"
    ticks = [t.get_text() for t in lr_axis.get_xticklabels() if t.get_text()]
    assert ticks and all(len(t) <= 6 for t in ticks), ticks  # 0.0002, 0.0005, 0.001: never 19 digits
    assert_legends_cover_no_points(lr_axis.figure)

    # a grid's few values: ticked exactly, rounded; declared tag(log, ...) is a log axis within a decade
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    OmegaConf.save({"hydra": {"sweeper": {"params": {"optim.lr": "tag(log, interval(1e-4, 9e-4))"}},
                              "overrides": {"task": []}}}, sweep_dir / "multirun.yaml")
    grid = with_values(runs, [{"lr": lr, "heads": "2"} for lr in ("0.00012345", "0.00045678")], [6.0, 5.9])
    grid.append(with_values(runs, [{"lr": "0.0008", "heads": "4"}], [5.8])[0])
    for i, r in enumerate(grid):
        r.run_dir = sweep_dir / str(i)
    assert records.key_scales(grid)["lr"] == records.LOG
    lr_axis = axis_named(drawn(plot.comparison_figure(grid, "a grid")), "lr")
    assert lr_axis.get_xscale() == "log"
    assert [t.get_text() for t in lr_axis.get_xticklabels()] == ["0.000123", "0.000457", "0.0008"]


def test_summary_rounds_swept_numbers(runs) -> None:
    rounded = with_values(runs, [{"lr": LONG_LR, "block_size": "8"}, {"lr": "0.01", "block_size": "16"}], [5.0, 5.1])
    md = summary.summary_markdown("rounded", rounded)
    assert "0.00152" in md and LONG_LR not in md
    assert records.display_value("128") == "128" and records.display_value("tiny") == "tiny"
    # a seeded sweep names its configurations rounded too: the summary's best line, the curves' legend
    seeded = with_values(runs, [{"lr": LONG_LR, "seed": "1"}, {"lr": LONG_LR, "seed": "2"},
                                {"lr": "0.01", "seed": "1"}], [5.0, 5.02, 5.1])
    md = summary.summary_markdown("seeded", seeded)
    assert "best configuration: lr=0.00152 (mean val loss 5.0100 over 2 seeds)" in md and LONG_LR not in md
    legend = drawn(plot.comparison_figure(seeded, "seeded")).axes[0].get_legend_handles_labels()[1]
    assert legend == ["lr=0.00152 (2 seeds)", "lr=0.01"]


def test_loss_picture_keeps_its_title_inside(runs) -> None:
    recorder = RunRecorder()
    recorder.val_curve = [tuple(p) for p in runs[0].metrics["val_curve"]]
    recorder.train_curve = [(s, v + 0.01) for s, v in recorder.val_curve]
    title = f"{runs[0].metrics['group']}  " + ",".join(f"key{i}={LONG_LR}" for i in range(6))  # a long run name
    fig = drawn(loss_figure(recorder, title))
    (ax,) = fig.axes
    width = fig.bbox.width
    extent = ax.title.get_window_extent()
    assert 0 <= extent.x0 and extent.x1 <= width and extent.y1 <= fig.bbox.height
    assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    assert_legends_cover_no_points(fig)
