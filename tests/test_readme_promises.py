"""README promises that no other test holds: W&B modes, early stopping, the fused loss's accuracy.

Each test names the sentence it checks, wherever it lives (README.md or docs/*.md); the components
are the real ones (Lightning's EarlyStopping as conf/callbacks/default.yaml configures it, the W&B
logger factory, the fused loss).
"""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from article_gpt.model.loss import linear_cross_entropy
from article_gpt.tracking import loggers as tracking

# The README and the docs/ pages it points to, as one text: a sentence may move between them.
README = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


# ---- "a run goes online only when you have credentials (WANDB_API_KEY or wandb login)" ----------
@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    """No W&B variable, and a netrc of our own (wandb login writes ~/.netrc)."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_auto_goes_online_only_with_credentials(no_wandb_env, monkeypatch):
    assert tracking.resolve_wandb_mode("auto") == "offline"  # no key, no login
    no_wandb_env.write_text("machine example.com login user password x\n")  # a login for another host
    assert tracking.resolve_wandb_mode("auto") == "offline"
    no_wandb_env.write_text("machine api.wandb.ai login user password " + "0" * 40 + "\n")  # `wandb login`
    no_wandb_env.chmod(0o600)
    assert tracking.resolve_wandb_mode("auto") == "online"
    no_wandb_env.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert tracking.resolve_wandb_mode("auto") == "online"


@pytest.mark.parametrize("env_mode, expected", [("offline", "offline"), ("disabled", "disabled"),
                                                ("online", "online"), ("dryrun", "offline")])
def test_wandb_mode_alone_decides(no_wandb_env, monkeypatch, env_mode, expected):
    """`WANDB_MODE` set, nothing else: it wins in auto mode, with or without a key."""
    monkeypatch.setenv("WANDB_MODE", env_mode)
    assert tracking.resolve_wandb_mode("auto") == expected
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert tracking.resolve_wandb_mode("auto") == expected


def test_forced_modes_win_over_the_environment(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    for mode in ("online", "offline", "disabled"):
        assert tracking.resolve_wandb_mode(mode) == mode


def test_mode_disabled_starts_no_wandb_run(no_wandb_env, tmp_path, monkeypatch):
    """`logger.wandb.mode=disabled`, or WANDB_MODE=disabled alone: no W&B logger, no files."""
    args = dict(save_dir=tmp_path / "run", group="g", name="n", config={})
    assert tracking.build_loggers({"wandb": {"mode": "disabled"}}, **args) == []
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.build_loggers({"wandb": {"mode": "auto"}}, **args) == []
    assert not (tmp_path / "run").exists()


# ---- "early stopping (patience 5)" -----------------------------------------------------------------
def test_early_stopping_ends_after_5_validations_without_improvement():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["callbacks=default"])
    stopper = instantiate(cfg.callbacks.early_stopping)
    assert stopper.monitor == "val/loss"

    def stops(loss: float) -> bool:
        return stopper._evaluate_stopping_criteria(torch.tensor(loss))[0]

    assert not any(stops(v) for v in (7.0, 6.5, 6.6, 6.7, 6.8, 6.9))  # 4 without improvement
    assert not stops(6.4)  # an improvement resets the count
    assert [stops(6.5) for _ in range(5)] == [False, False, False, False, True]  # the 5th ends the run
    assert instantiate(cfg.callbacks.early_stopping)._evaluate_stopping_criteria(torch.tensor(float("nan")))[0]


# ---- "It matches F.cross_entropy to <a> (loss) and <b> (gradients)", at the default chunk ------------
def test_fused_loss_accuracy_claim_at_the_default_chunk():
    claim = re.search(r"matches `F\.cross_entropy` to ([\d.e-]+) \(loss\) and ([\d.e-]+) \(gradients\)", README)
    assert claim, "the fused-loss accuracy sentence (README.md or docs/*.md)"
    loss_tol, grad_tol = float(claim[1]), float(claim[2])
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        chunk = compose("train").model.loss_chunk_size
    assert chunk == 1024
    for seed in range(3):  # GPT-2's vocabulary, float32, the model's init scale for the head
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(64, 128, generator=g).requires_grad_()
        w = (torch.randn(50257, 128, generator=g) * 0.02).requires_grad_()
        t = torch.randint(0, 50257, (64,), generator=g)
        ref = F.cross_entropy(F.linear(x, w), t)
        ref_grads = torch.autograd.grad(ref, (x, w))
        fused = linear_cross_entropy(x, w, None, t, chunk)
        grads = torch.autograd.grad(fused, (x, w))
        assert (fused - ref).abs().item() <= loss_tol, seed
        for got, want in zip(grads, ref_grads, strict=True):
            assert (got - want).abs().max().item() <= grad_tol, seed
