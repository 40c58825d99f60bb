"""optim=muon: Muon for exactly the blocks' 2-D weights, AdamW for the rest, one optimizer whose state
resumes exactly; it runs with a token budget and under DDP (the resume itself: test_model_options.py)."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from conftest import ROOT, TINY, read_metrics, run_dirs
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_launchers import DDP

from article_gpt.config.rules import validate
from article_gpt.errors import ConfigError
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.training.module import GPTModule
from article_gpt.training.optim import MuonAdamW, MuonConfig, muon_split

SMALL = dict(vocab_size=300, block_size=16, embedding_dim=16, num_layers=2, heads=2, head_size=8)
HIDDEN = {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "ffn.fc", "ffn.proj")}


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def names(model: GPT, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("tie_weights", [True, False])
def test_muon_takes_exactly_the_hidden_matrices(tie_weights):
    model = GPT(GPTConfig(**SMALL, tie_weights=tie_weights))
    hidden, rest = muon_split(model)
    assert names(model, hidden) == HIDDEN
    everything = {n for n, _ in model.named_parameters()}  # a tied head is the embedding, once
    assert names(model, rest) == everything - HIDDEN and len(hidden) + len(rest) == len(everything)
    assert {"tok_emb.weight", "pos_emb.weight", "ln_f.weight", "blocks.0.ln1.bias", "blocks.0.attn.qkv.bias"} <= \
        names(model, rest)
    assert ("lm_head.weight" in names(model, rest)) is not tie_weights
    opt = MuonConfig().build(model, torch.device("cpu"))
    adamw_decay, adamw_none, muon = opt.param_groups
    assert (names(model, muon["params"]), adamw_decay["weight_decay"], adamw_none["weight_decay"]) == (HIDDEN, 0.1, 0.0)
    assert all(p.dim() == 1 for p in adamw_none["params"]) and all(p.dim() == 2 for p in adamw_decay["params"])


def train(opt: torch.optim.Optimizer, model: GPT, steps: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 300, (4, 16), generator=gen)
        model(ids, ids)[1].backward()
        opt.step()
        opt.zero_grad()


def test_one_optimizer_is_muon_and_adamw_side_by_side():
    """MuonAdamW steps exactly as torch's Muon and AdamW, each on its own parameters."""
    cfg = MuonConfig(lr=3e-3, muon_lr=0.05, muon_momentum=0.9)
    torch.manual_seed(0)
    a = GPT(GPTConfig(**SMALL))
    b = copy.deepcopy(a)
    train(cfg.build(a, torch.device("cpu")), a, 3)
    hidden, rest = muon_split(b)
    pair = [torch.optim.Muon(hidden, lr=0.05, momentum=0.9, weight_decay=0.1),
            torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
                              lr=3e-3, betas=(0.9, 0.95), fused=True)]
    both = types.SimpleNamespace(step=lambda: [o.step() for o in pair], zero_grad=lambda: [o.zero_grad() for o in pair])
    train(both, b, 3)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


def test_its_state_dict_resumes_the_same_steps():
    torch.manual_seed(0)
    a = GPT(GPTConfig(**SMALL))
    opt = MuonConfig().build(a, torch.device("cpu"))
    train(opt, a, 3)
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(a.state_dict())
    train(opt, a, 2, seed=1)
    b = GPT(GPTConfig(**SMALL))
    b.load_state_dict(weights)
    resumed = MuonConfig().build(b, torch.device("cpu"))
    resumed.load_state_dict(saved)
    assert isinstance(resumed, MuonAdamW) and resumed.muon.state is resumed.state is resumed.adamw.state
    train(resumed, b, 2, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_optim_muon_composes_and_its_keys_are_checked():
    cfg = compose_train("optim=muon", "optim.muon_lr=0.05", "optim.lr=2e-3")
    validate(cfg)
    module = GPTModule(model=SMALL, optim=OmegaConf.to_container(cfg.optim, resolve=True))
    module.trainer = types.SimpleNamespace(estimated_stepping_batches=10)
    opt = module.configure_optimizers()["optimizer"]
    assert isinstance(opt, MuonAdamW) and [g["initial_lr"] for g in opt.param_groups] == [2e-3, 2e-3, 0.05]
    for bad, message in (("optim.muon_lr=0", "optim.muon_lr=0: must be a number in (0.0, 10.0] or null"),
                         ("optim.muon_momentum=1", "optim.muon_momentum=1: must be a number in [0.0, 1.0) or null")):
        with pytest.raises(ConfigError) as err:
            validate(compose_train("optim=muon", bad))
        assert str(err.value) == message


@pytest.mark.slow
def test_muon_trains_to_a_token_budget(run_cli, outputs):
    run_cli("train.py", *TINY, "logger=none", "optim=muon", "budget.tokens=1500", "trainer.max_epochs=10",
            "callbacks.progress_bar.refresh_rate=0")
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert m["status"] == "completed" and m["tokens_seen"] >= 1500 and m["val_loss"] < m["val_loss_initial"]


@pytest.mark.slow
@pytest.mark.all_cores
def test_muon_under_ddp(run_cli, outputs):
    run_cli("train.py", *DDP, "model.heads=2", "logger=none", "optim=muon")
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert m["status"] == "completed" and m["steps"] == 2
