"""The pure-torch GPT: shapes, causality, chained blocks, learning, parameter accounting."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT
from hand_count import hand_flops_per_token, hand_params
from hydra import compose, initialize_config_dir

from article_gpt.model.gpt import GPT, GPTConfig

SMALL = dict(vocab_size=97, block_size=16, embedding_dim=32, num_layers=3, heads=2, head_size=16, dropout=0.0)


def small_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **overrides})).eval()


def model_config(name: str) -> GPTConfig:
    """``conf/model/<name>.yaml`` as Hydra composes it for ``python train.py model=<name>``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    return GPTConfig(**cfg.model)


def meta_model(cfg: GPTConfig) -> GPT:
    with torch.device("meta"):  # shapes only: no memory, no init cost for 100M+ parameters
        return GPT(cfg)


def test_training_shapes_and_scalar_loss():
    model = small_model()
    x = torch.randint(0, 97, (3, 16))
    logits, loss = model(x, torch.randint(0, 97, (3, 16)))
    assert logits.shape == (3, 16, 97)
    assert loss.shape == () and torch.isfinite(loss)
    # an untrained model predicts nearly uniformly: loss close to ln(vocab)
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5


def test_inference_returns_last_position_only():
    model = small_model()
    x = torch.randint(0, 97, (2, 10))
    last, loss = model(x)
    assert loss is None
    assert last.shape == (2, 1, 97)
    full, _ = model(x, torch.zeros_like(x))
    torch.testing.assert_close(last[:, 0], full[:, -1], rtol=0, atol=1e-6)


def test_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="block_size=16"):
        small_model()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("t", [0, 5, 14])
def test_causality_future_tokens_do_not_change_past_logits(t):
    model = small_model()
    x = torch.randint(0, 97, (2, 16))
    y = x.clone()
    y[:, t + 1 :] = (x[:, t + 1 :] + 1 + torch.randint(0, 90, x[:, t + 1 :].shape)) % 97  # every later token differs
    assert (y[:, t + 1 :] != x[:, t + 1 :]).all()
    targets = torch.zeros_like(x)
    lx, _ = model(x, targets)
    ly, _ = model(y, targets)
    torch.testing.assert_close(lx[:, : t + 1], ly[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(lx[:, t + 1 :], ly[:, t + 1 :], atol=1e-3)  # the future itself did change


def test_every_block_gets_a_gradient():
    """Blocks are chained: the loss reaches every block's weights, the first block's included."""
    model = small_model(num_layers=4).train()
    x = torch.randint(0, 97, (2, 16))
    _, loss = model(x, torch.randint(0, 97, (2, 16)))
    loss.backward()
    for i, block in enumerate(model.blocks):
        for name, p in block.named_parameters():
            assert p.grad is not None, f"blocks.{i}.{name} has no gradient"
            if p.dim() >= 2:  # every weight matrix (a key bias alone can get exactly 0: softmax is shift-invariant)
                assert p.grad.abs().sum() > 0, f"blocks.{i}.{name} has a zero gradient"
    # perturbing the first block changes the final hidden states: it feeds the rest
    with torch.no_grad():
        before = model.eval().hidden(x)
        model.blocks[0].ffn.proj.bias.add_(torch.randn(32))
        after = model.hidden(x)
    assert (before - after).abs().max() > 0.1


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, block_size=16, embedding_dim=32, num_layers=2, heads=2, head_size=16))
    batch = torch.randint(0, 256, (2, 17))
    x, y = batch[:, :-1], batch[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(200):  # about 22 steps reach the bound, from any seed tried
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        if loss.item() < 0.5:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 5.0  # started near ln(256) = 5.55
    assert loss.item() < 0.5, f"loss only fell from {first:.3f} to {loss.item():.3f} in 200 steps"


def shape(cfg: GPTConfig) -> tuple:
    return (cfg.vocab_size, cfg.block_size, cfg.embedding_dim, cfg.num_layers, cfg.heads, cfg.head_size, cfg.bias,
            cfg.tie_weights)


def test_seed_config_has_162_35m_parameters():
    """The original Article GPT's model (conf/model/seed.yaml): 768 wide, 12 layers, an untied head with bias."""
    cfg = model_config("seed")
    assert not cfg.tie_weights and cfg.embedding_dim == 768 and cfg.num_layers == 12
    total = meta_model(cfg).num_params()["params_total"]
    # 50257*768 + 64*768 + 12 * 7,085,568 (a block) + 1,536 (ln_f) + 50257*768 + 50257 (head)
    assert total == hand_params(*shape(cfg)) == 162_350_161


def test_gpt2_config_has_124_4m_parameters():
    cfg = model_config("gpt2")
    assert cfg.tie_weights and cfg.block_size == 1024
    counts = meta_model(cfg).num_params()
    assert counts["params_total"] == hand_params(*shape(cfg)) == 124_439_808  # GPT-2 small, tied head
    assert counts["params_non_embedding"] == 124_439_808 - 50257 * 768 - 1024 * 768


README_MODEL_ROW = re.compile(  # | `tiny` | 7.2M | 128 wide, 4 layers, 4 heads × 32, block 64, ...
    r"^\| `(\w+)` \| ([\d.]+)M \| [^|]*?\b(\d+) wide, (\d+) layers, (\d+) (?:heads )?× (\d+), block (\d+)")


def test_readme_model_table_matches_every_preset():
    """The model table (docs/configuration.md): each preset's shape and its parameter count, to the
    digits shown."""
    table = (ROOT / "docs" / "configuration.md").read_text()
    rows = {m[1]: m for line in table.splitlines() if (m := README_MODEL_ROW.match(line))}
    presets = {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")}
    assert {"tiny", "small", "medium", "gpt2", "seed"} <= rows.keys() <= presets
    for name, row in rows.items():
        cfg = model_config(name)
        assert (cfg.embedding_dim, cfg.num_layers, cfg.heads, cfg.head_size, cfg.block_size) == tuple(
            int(row[i]) for i in range(3, 8)), name
        total = meta_model(cfg).num_params()["params_total"]
        assert total == hand_params(*shape(cfg)), name
        digits = len(row[2].partition(".")[2])
        assert f"{total / 1e6:.{digits}f}" == row[2], f"{name}: {total:,} parameters, README says {row[2]}M"


@pytest.mark.parametrize("name", ["tiny", "small", "medium", "gpt2", "seed"])
def test_every_model_config_builds(name):
    cfg = model_config(name)
    model = meta_model(cfg)
    assert model.cfg == cfg
    assert len(model.blocks) == cfg.num_layers
    assert model.blocks[0].attn.qkv.out_features == 3 * cfg.heads * cfg.head_size


def test_head_size_is_independent_of_embedding_dim():
    model = small_model(embedding_dim=48, heads=3, head_size=40)  # 3 * 40 = 120 != 48
    attn = model.blocks[0].attn
    assert attn.qkv.weight.shape == (3 * 120, 48)
    assert attn.proj.weight.shape == (48, 120)
    logits, loss = model(torch.randint(0, 97, (2, 8)), torch.randint(0, 97, (2, 8)))
    assert logits.shape == (2, 8, 97) and torch.isfinite(loss)


def test_flops_per_token_formula():
    cfg = GPTConfig(vocab_size=100, block_size=8, embedding_dim=16, num_layers=2, heads=2, head_size=4)
    model = GPT(cfg)
    # by hand: per block ln1 32 + qkv 16*24+24 + proj 8*16+16 + ln2 32 + fc 16*64+64 + proj 64*16+16 = 2744
    per_block = 32 + (16 * 24 + 24) + (8 * 16 + 16) + 32 + (16 * 64 + 64) + (64 * 16 + 16)
    total = 100 * 16 + 8 * 16 + 2 * per_block + 32  # tied head adds nothing
    assert model.num_params() == {
        "params_total": total,
        "params_non_embedding": total - 100 * 16 - 8 * 16,
        "params_matmul": total - 8 * 16,  # all but the position table; the token table acts as the head
    }
    attention = 12 * 2 * (2 * 4) * 8  # 12 * layers * heads*head_size * T
    assert model.flops_per_token() == 6 * (total - 128) + attention == 44_256
    assert (total, 44_256) == (hand_params(100, 8, 16, 2, 2, 4), hand_flops_per_token(100, 8, 16, 2, 2, 4))
    assert model.flops_per_token(seq_len=4) == 6 * (total - 128) + attention // 2

    untied = GPT(GPTConfig(**{**cfg.to_dict(), "tie_weights": False}))
    n = untied.num_params()
    assert n["params_total"] == total + 100 * 16 + 100  # head weight and bias
    assert n["params_matmul"] == n["params_total"] - 8 * 16 - 100 * 16  # the head, not the lookup table
    assert untied.flops_per_token() == 6 * n["params_matmul"] + attention
    assert untied.flops_per_token() == hand_flops_per_token(100, 8, 16, 2, 2, 4, tied=False) == 6 * (
        total + 1600 + 100 - 128 - 1600) + attention  # the head's weight and bias, not the token lookup


def test_param_groups_decay_only_matrices():
    model = small_model()
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == model.num_params()["params_total"]  # each parameter once, the tied one included
