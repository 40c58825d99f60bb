"""The speedrun's architecture options, the WSD schedule and document-aligned windows: each does what
its docstring says, the defaults build today's model, bad values are one line, and a run with every
option on resumes bit for bit (tests/test_resume.py's interruption, shared by all options)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, read_metrics, run_dirs
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from test_resume import SHAPE, wandb_history

from article_gpt.config.rules import validate
from article_gpt.data.corpus import TextDataModule, document_starts
from article_gpt.errors import ConfigError
from article_gpt.model.decoding import Decoder
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.model.loss import linear_cross_entropy
from article_gpt.model.rotary import apply_rotary, rotary_tables
from article_gpt.training.module import lr_lambda

SMALL = dict(vocab_size=300, block_size=16, embedding_dim=16, num_layers=2, heads=2, head_size=8)
EOT = 50256


def gpt(**options) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**SMALL, **options})).eval()


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


# ---- the defaults are today's model ----------------------------------------------------------------
def test_defaults_and_an_old_checkpoints_config_build_todays_model():
    """A checkpoint written before these options has none of their keys: it builds the same model,
    with the same state-dict keys (a learned position table) and the same initial weights."""
    old = {k: v for k, v in dataclasses.asdict(GPTConfig(**SMALL)).items()
           if k not in ("position", "qk_norm", "mlp_activation", "zero_init_proj", "logit_softcap")}
    a, b = gpt(), GPT(GPTConfig(**old))
    assert "pos_emb.weight" in a.state_dict() and list(a.state_dict()) == list(b.state_dict())
    torch.manual_seed(0)
    b = GPT(GPTConfig(**old))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---- rotary position embeddings --------------------------------------------------------------------
def test_rope_scores_depend_only_on_the_offset():
    cos, sin = rotary_tables(64, 8)
    torch.manual_seed(0)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        qm = apply_rotary(q, cos[m].double(), sin[m].double())
        kn = apply_rotary(k, cos[n].double(), sin[n].double())
        return float(qm @ kn)

    for offset in (0, 1, 5, 17):
        scores = [score(n + offset, n) for n in (0, 3, 20, 40)]
        assert max(scores) - min(scores) < 1e-6, (offset, scores)
    assert abs(score(5, 0) - score(6, 0)) > 1e-3  # and the offset does matter
    assert torch.allclose(apply_rotary(q, cos[9].double(), sin[9].double()).norm(), q.norm())  # a rotation


def test_rope_attention_is_the_same_wherever_the_window_sits():
    """The model has no position table; its attention over a window rotated as positions 0..7 equals
    the same window rotated as positions 5..12, and learned positions are a table in the state dict."""
    model = gpt(position="rope", block_size=32)
    assert "pos_emb.weight" not in model.state_dict() and "pos_emb.weight" in gpt().state_dict()
    assert model.num_params()["params_total"] == sum(p.numel() for p in model.parameters())  # no table counted
    attn, x = model.blocks[0].attn, torch.randn(1, 8, 16)
    scale_queries_and_keys(model, 30.0)  # peaked attention, so positions show in the output
    at = [attn(x, None, (model.rope_cos[p], model.rope_sin[p])) for p in (torch.arange(8), torch.arange(5, 13))]
    assert torch.allclose(at[0], at[1], atol=1e-5)
    assert not torch.allclose(at[0], attn(x), atol=1e-3)  # without the rotation it differs


def test_rope_kv_cache_decoding_equals_recomputing_the_window():
    model = gpt(position="rope")
    ids = torch.randint(0, 300, (2, 10))
    dec = Decoder(model, ids[:, :6])
    cached = [dec.logits()]
    for t in range(6, 10):
        dec.append(ids[:, t])
        cached.append(dec.logits())
    full = [model(ids[:, : t + 1])[0][:, -1] for t in range(5, 10)]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cached, full))


# ---- QK-norm, ReLU², zero-initialized projections --------------------------------------------------
def scale_queries_and_keys(model: GPT, factor: float) -> None:
    with torch.no_grad():
        for block in model.blocks:
            d = block.attn.heads * block.attn.head_size
            block.attn.qkv.weight[: 2 * d] *= factor
            block.attn.qkv.bias[: 2 * d] *= factor


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(qk_norm):
    ids = torch.randint(0, 300, (2, 12))
    model = gpt(qk_norm=qk_norm)
    before = model(ids)[0]
    scale_queries_and_keys(model, 7.0)
    assert torch.allclose(model(ids)[0], before, atol=1e-5) is qk_norm


def test_relu2_is_relu_squared():
    model = gpt(mlp_activation="relu2")
    ffn, x = model.blocks[0].ffn, torch.randn(3, 16)
    assert torch.allclose(ffn(x), ffn.proj(F.relu(ffn.fc(x)) ** 2))
    assert not torch.allclose(gpt().blocks[0].ffn(x), ffn.proj(F.relu(gpt().blocks[0].ffn.fc(x)) ** 2))


def test_zero_init_proj_starts_every_block_as_the_identity():
    model = gpt(zero_init_proj=True)
    projections = {n: p for n, p in model.named_parameters() if n.endswith("proj.weight")}
    assert len(projections) == 2 * SMALL["num_layers"]
    assert all(not p.any() for p in projections.values())
    assert model.blocks[0].attn.qkv.weight.std() > 0.01
    ids = torch.randint(0, 300, (1, 8))
    x = model.tok_emb(ids) + model.pos_emb(torch.arange(8))
    assert torch.allclose(model.hidden(ids), model.ln_f(x))  # the blocks add nothing yet
    assert all(p.any() for n, p in gpt().named_parameters() if n.endswith("proj.weight"))


# ---- logit soft-capping, with the fused loss ------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_softcap_fused_loss_equals_the_capped_plain_loss_and_its_gradients(bias):
    torch.manual_seed(0)
    x = (torch.randn(37, 8, dtype=torch.float64) * 3).requires_grad_()
    w = torch.randn(300, 8, dtype=torch.float64).requires_grad_()
    b = torch.randn(300, dtype=torch.float64).requires_grad_() if bias else None
    t = torch.randint(0, 300, (37,))
    t[3] = -100
    inputs = [v for v in (x, w, b) if v is not None]
    capped = 2.0 * torch.tanh(F.linear(x, w, b) / 2.0)
    ref = F.cross_entropy(capped, t)
    ref_grads = torch.autograd.grad(ref, inputs)
    fused = linear_cross_entropy(x, w, b, t, 64, softcap=2.0)
    assert torch.allclose(fused, ref, rtol=1e-12)
    assert all(torch.allclose(g, r, atol=1e-12) for g, r in zip(torch.autograd.grad(fused, inputs), ref_grads))
    with torch.no_grad():  # validation: the log-sum-exp pass alone
        assert torch.allclose(linear_cross_entropy(x, w, b, t, 64, softcap=2.0), ref, rtol=1e-12)
    assert not torch.allclose(linear_cross_entropy(x.detach(), w.detach(), b, t, 64), ref)


def test_softcap_bounds_the_logits_of_sampling_and_the_decoder():
    model = gpt(logit_softcap=0.5)
    with torch.no_grad():
        model.lm_head.weight.mul_(100)  # logits far beyond the cap
    ids = torch.randint(0, 300, (1, 8))
    logits = model(ids)[0]
    assert logits.abs().max() <= 0.5 and logits.abs().max() > 0.49  # fp32 tanh saturates at 1
    assert torch.allclose(Decoder(model, ids).logits(), logits[:, -1])
    fused = gpt(logit_softcap=0.5, loss_chunk_size=64)
    fused.load_state_dict(model.state_dict())
    plain_loss, fused_loss = model(ids, ids)[1], fused(ids, ids)[1]
    assert torch.allclose(plain_loss, fused_loss) and plain_loss < math.log(300) + 1


# ---- the WSD schedule ------------------------------------------------------------------------------
def test_wsd_holds_then_decays_linearly_and_cosine_is_unchanged():
    warmup, total, lo = 10, 100, 0.1
    wsd = [lr_lambda(s, warmup, total, lo, "wsd", 0.2) for s in range(total)]
    assert wsd[:warmup] == [(s + 1) / warmup for s in range(warmup)]
    assert wsd[warmup:81] == [1.0] * 71  # stable until the last 20 steps
    assert wsd[90] == pytest.approx(1 - 0.9 * 10 / 20) and wsd[99] == pytest.approx(1 - 0.9 * 19 / 20)
    assert lr_lambda(total, warmup, total, lo, "wsd", 0.2) == pytest.approx(lo)
    assert all(a > b for a, b in zip(wsd[80:], wsd[81:]))
    for s in (0, 9, 10, 55, 99):
        expected = (s + 1) / warmup if s < warmup else lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90))
        assert lr_lambda(s, warmup, total, lo) == lr_lambda(s, warmup, total, lo, "cosine", 0.2) == expected


# ---- windows aligned to document starts ------------------------------------------------------------
def test_document_starts_tile_each_document_from_its_start():
    ids = np.array([1] * 10 + [EOT] + [2] * 3 + [EOT] + [3] * 12)  # documents at 0, 11 and 15
    assert document_starts(ids, EOT, 4, 4).tolist() == [0, 4, 8, 11, 15, 19]  # 23 + 5 > 27: no room
    assert document_starts(ids, EOT, 4, 6).tolist() == [0, 6, 11, 15, 21]


def test_datamodule_trains_on_document_windows(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for name, text in (("a.txt", "Gradient descent walks downhill. " * 10), ("b.txt", "Attention looks back. " * 7)):
        (d / name).write_text(text)
    dm = TextDataModule(train={"path": str(d)}, val={"path": str(d / "b.txt")}, block_size=8, windows="documents",
                        cache_dir=str(tmp_path / "cache"), dataloader={"batch_size": 4})
    dm.setup("fit")
    second = int(np.flatnonzero(dm.train_ids == EOT)[0]) + 1
    assert list(dm.train_set.starts) == list(document_starts(dm.train_ids, EOT, 8, 8))
    assert 0 in dm.train_set.starts and second in dm.train_set.starts
    xs = torch.cat([x for x, _ in dm.train_dataloader()])
    assert sorted(xs[:, 0].tolist()) == sorted(int(dm.train_ids[s]) for s in dm.train_set.starts)


# ---- validation: one line each --------------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("model.position=absolute", "model.position=absolute: must be one of learned, rope"),
    ("model.mlp_activation=swiglu", "model.mlp_activation=swiglu: must be one of gelu, relu2"),
    ("model.logit_softcap=0", "model.logit_softcap=0: must be a number in (0.0, inf] or null"),
    ("model.qk_norm=yes", "model.qk_norm=yes: must be true or false"),
    ("optim.schedule=linear", "optim.schedule=linear: must be one of cosine, wsd"),
    ("optim.decay_fraction=1.5", "optim.decay_fraction=1.5: must be a number in [0.0, 1.0]"),
    ("data.windows=articles", "data.windows=articles: must be one of random, documents"),
])
def test_a_bad_option_is_one_line_naming_it(override, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_train(override))
    assert str(err.value) == message


def test_rope_needs_an_even_head_size_and_no_pretrained_positions():
    with pytest.raises(ConfigError, match=r"^model.head_size=15: must be even with model.position=rope"):
        validate(compose_train("model.position=rope", "model.head_size=15"))
    cfg = compose_train("model.position=rope")
    with open_dict(cfg):
        cfg.model.pretrained = "gpt2"  # as ValidateConfig sees it, with GPT-2's shape resolved
    with pytest.raises(ConfigError, match=r"^model.position=rope with model.pretrained=gpt2: "):
        validate(cfg)
    validate(compose_train("model.position=rope", "model.qk_norm=true", "model.logit_softcap=30",
                           "optim.schedule=wsd", "data.windows=documents"))


# ---- resume: bit-identical with every option on ---------------------------------------------------
OPTIONS = ["model.position=rope", "model.qk_norm=true", "model.mlp_activation=relu2", "model.zero_init_proj=true",
           "model.logit_softcap=30", "optim=muon", "optim.schedule=wsd", "data.windows=documents"]


@pytest.fixture(scope="module")
def option_runs(module_cli):
    run, env, outputs = module_cli
    run("train.py", *SHAPE, *OPTIONS, timeout=900)
    (straight,) = run_dirs(outputs)
    run("tests/interrupt_at.py", "4", "SIGTERM", *SHAPE, *OPTIONS, f"paths.log_dir={outputs}", check=False,
        timeout=900)
    (interrupted,) = [d for d in run_dirs(outputs) if d != straight]
    ckpt = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    run("train.py", "resume=latest", timeout=900)
    return env, straight, interrupted, ckpt


@pytest.mark.slow
def test_a_run_with_every_option_resumes_bit_identically(option_runs):
    env, straight, interrupted, ckpt = option_runs
    assert ckpt["global_step"] == 4 and "pos_emb.weight" not in {k.removeprefix("model.") for k in ckpt["state_dict"]}
    hp = ckpt["hyper_parameters"]
    assert hp["model"]["position"] == "rope" and hp["optim"]["_target_"].endswith("MuonConfig")
    (opt_state,) = ckpt["optimizer_states"]
    assert len(opt_state["param_groups"]) == 3 and "momentum_buffer" in str(opt_state["state"])
    a, b = read_metrics(straight), read_metrics(interrupted)
    assert b["status"] == a["status"] == "completed" and b["steps"] == a["steps"] == 8
    history = wandb_history(interrupted, env)
    assert [s for s, _ in history] == list(range(8)) and history == wandb_history(straight, env)
    assert b["val_curve"] == a["val_curve"] and b["val_loss"] == a["val_loss"]
