"""The scaling fit (article_gpt/sweeps/scaling.py): it recovers a known law from synthetic runs,
and a real isoflop sweep writes scaling.json, scaling.md and scaling.png at its end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY
from hydra import compose, initialize_config_dir

from article_gpt.sweeps import scaling, scaling_report
from article_gpt.sweeps.records import Run

# Hoffmann et al.'s fitted law, sampled as an isoFLOP sweep with C = 6ND and 0.3% noise on L
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def true_n_opt(flops: float) -> float:
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    return g * (flops / 6) ** (BETA / (ALPHA + BETA))


def synthetic_run(n: float, flops: float, loss: float, seed: int | None = None) -> Run:
    d = flops / (6 * n)
    metrics = dict(status="completed", val_loss=loss, params_non_embedding=n, params_total=1.5 * n,
                   tokens_seen=d, train_flops=flops, flops_per_token=6 * n, train_tokens=d)
    swept = {"n_embd": f"{n:.0f}", "flops": f"{flops:g}", **({"seed": str(seed)} if seed is not None else {})}
    overrides = {"model.n_embd": swept["n_embd"], "budget.flops": swept["flops"]}
    return Run(Path("/nonexistent"), metrics, overrides, swept=swept)


def synthetic_sweep(rng: np.random.Generator) -> list[Run]:
    runs = []
    for flops in (1e18, 1e19, 1e20):
        for k in range(-3, 4):  # sizes around the optimum, off-centre by a factor of 1.4
            n = true_n_opt(flops) * 2.0 ** (k + 0.5)
            loss = (E + A / n ** ALPHA + B / (flops / (6 * n)) ** BETA) * math.exp(rng.normal(0, 0.003))
            runs.append(synthetic_run(n, flops, loss))
    return runs


def test_fit_recovers_a_known_law():
    fit = scaling.fit(scaling.points(synthetic_sweep(np.random.default_rng(0))))
    law = fit.parametric
    assert law.alpha == pytest.approx(ALPHA, rel=0.10) and law.beta == pytest.approx(BETA, rel=0.10), law
    assert [b.flops for b in fit.budgets] == [1e18, 1e19, 1e20]
    for b in fit.budgets:
        assert b.bracketed and b.n_opt == pytest.approx(true_n_opt(b.flops), rel=0.25), b
    assert fit.exponent[0] == pytest.approx(BETA / (ALPHA + BETA), rel=0.10)


def test_seeds_of_one_configuration_are_one_point_their_mean():
    runs = [synthetic_run(1e6, 1e15, loss, seed) for seed, loss in ((1, 3.0), (2, 3.2))]
    runs.append(synthetic_run(2e6, 1e15, 2.9, 1))
    pts = {p.n: p for p in scaling.points(runs)}
    assert pts[1e6].loss == pytest.approx(3.1) and pts[1e6].seeds == 2
    assert pts[1e6].label == "n_embd=1000000"  # neither the budget nor the seed: the size
    assert not scaling.sized(list(pts.values()))  # one budget: nothing for a scaling law to say


def test_scipy_missing_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` now fails as if not installed
    with pytest.raises(scaling.ScalingError, match=r'pip install -e "\.\[analysis\]"'):
        scaling.fit(scaling.points(synthetic_sweep(np.random.default_rng(0))))


def test_train_yaml_scaling_block_is_the_fit_defaults():
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=["experiment=isoflop"])
    assert dict(cfg.scaling) == scaling_report.settings() == {"params": "non_embedding", "predict_flops": None}
    assert cfg.callbacks.early_stopping is None  # an isoflop run spends its whole budget


def test_bad_scaling_values_are_refused_in_one_line(run_cli):
    proc = run_cli("train.py", *TINY, "logger=none", "scaling.params=embedding", check=False)  # seconds if let through
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: scaling.params=embedding: must be one of "
                                                     "non_embedding, total")
    proc = run_cli("scripts/compare_runs.py", "/nonexistent", "--predict-flops", "-1", check=False)
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: scaling.predict_flops=-1.0: must be a positive "
                                                         "number or null")


# The smallest sweep with a parabola per budget and the parametric fit: 3 sizes x 2 budgets
SWEEP = ["experiment=isoflop", "logger=none", "model.embedding_dim=16,24,32",
         "model.num_layers=1", "budget.flops=4e9,1e10",
         "model.block_size=16", "dataloader.batch_size=4", "trainer=debug", "sample.max_new_tokens=4",
         "scaling.predict_flops=1e11"]


@pytest.fixture(scope="module")
def isoflop_sweep(module_cli):
    run, _, outputs = module_cli
    proc = run("train.py", "-m", *SWEEP, timeout=600)
    (sweep,) = (outputs / "sweeps").iterdir()
    return sweep, proc


@pytest.mark.slow
def test_isoflop_sweep_writes_its_scaling_fit(isoflop_sweep):
    sweep, proc = isoflop_sweep
    assert f"scaling: {sweep / 'scaling.md'}" in proc.stdout
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):  # each spent its whole budget
        m = json.loads((job / "metrics.json").read_text())
        budget = float(next(o for o in m["overrides"] if o.startswith("budget.flops=")).split("=")[1])
        assert m["status"] == "completed" and budget <= m["train_flops"] < budget + m["flops_per_token"] * 64
    data = json.loads((sweep / "scaling.json").read_text())
    assert {"E", "A", "B", "alpha", "beta", "a"} <= set(data) and data["params"] == "non_embedding"
    assert all(math.isfinite(data[k]) and data[k] >= 0 for k in ("E", "A", "B", "alpha", "beta"))
    assert [b["flops"] for b in data["budgets"]] == [4e9, 1e10] and all(b["runs"] == 3 for b in data["budgets"])
    for b in data["budgets"]:
        assert b["n_opt"] is None or (b["n_opt"] > 0 and 0 < b["loss_opt"] < 11), b
    assert data["prediction"]["flops"] == 1e11 and data["prediction"]["n"] > 0
    md = (sweep / "scaling.md").read_text()
    assert "non-embedding parameters" in md and "of the parameters of embedding_dim=32" in md
    assert "Prediction for 100G FLOPs" in md
    import matplotlib.image

    assert matplotlib.image.imread(sweep / "scaling.png").shape[:2] == (528, 1210)


@pytest.mark.slow
def test_compare_runs_writes_the_scaling_fit_of_any_runs(isoflop_sweep, module_cli, tmp_path):
    sweep, _ = isoflop_sweep
    run, _, _ = module_cli
    proc = run("scripts/compare_runs.py", str(sweep), "--out", str(tmp_path), "--params", "total")
    assert "scaling.md, scaling.json, scaling.png" in proc.stdout
    data = json.loads((tmp_path / "scaling.json").read_text())
    assert data["params"] == "total" and data["prediction"] is None
    first = next(p for p in data["points"])
    assert first["n"] > 800_000  # total parameters: a 50k-token table at width 16 or more
