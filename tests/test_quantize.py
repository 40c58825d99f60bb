"""Int8 weight-only decoding (article_gpt/model/quantize.py, `python generate.py quantize=int8`).

Tiny models built here (and test_generate's model overfit on a short text); the CLI runs as a real
subprocess on a checkpoint laid out as train.py saves it. Speed is measured by
`scripts/benchmark.py generate --quantize int8`, never asserted here.
"""

from __future__ import annotations

import copy

import pytest
import test_generate
import torch
import torch.nn as nn
from conftest import ROOT
from hydra import compose, initialize_config_dir
from test_bad_inputs import assert_refused, run
from test_generate import BLOCK, TEXT, save_ckpt, text_prompts, tiny_model

from article_gpt.config.rules import validate_generate
from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import ConfigError
from article_gpt.model.checkpoint import load_model
from article_gpt.model.decoding import Decoder, generate, generate_many
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.model.quantize import Int8Linear, logits_loss, quantize_int8

overfit = test_generate.overfit  # the fixture: test_generate's tiny model overfit on its TEXT (one thread)


def quantized(model: GPT) -> GPT:
    q = copy.deepcopy(model)
    quantize_int8(q)
    return q


def test_int8_linear_is_within_its_rounding_bound():
    """The int8 layer's error is what its two roundings allow: each weight by at most half its row's
    step (absmax / 127), each input by at most half the call's step (its range / 127, 7 bits)."""
    torch.manual_seed(0)
    linear = nn.Linear(48, 40)
    q = Int8Linear(linear)
    x = torch.randn(5, 3, 48)
    w = linear.weight.detach()
    assert q.qweight.dtype == torch.int8 and (q.qweight.abs().amax(dim=1) == 127).all()
    assert q.dequantized().ne(w).any()  # really rounded
    w_half_step = w.abs().amax(dim=1) / 127 / 2
    x_half_step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127 / 2
    bound = x.abs() @ w_half_step.expand(48, 40) + x_half_step * q.dequantized().abs().sum(dim=1) + 1e-5
    err = (q(x) - linear(x)).abs()
    assert (err <= bound).all()
    assert err.max() > 1e-4  # the int8 kernel ran, not the fp32 weight


def test_int8_gpt_logits_close_to_fp32_and_the_decoder_head_runs_int8(overfit):
    q = quantized(overfit)
    assert not any(isinstance(m, nn.Linear) for m in q.modules())  # the tied head too
    assert q.tok_emb.weight.dtype == torch.float32  # the embedding keeps its fp32 table
    x = text_prompts(4, BLOCK)
    with torch.inference_mode():
        ref, got = overfit(x)[0][:, -1], q(x)[0][:, -1]
        # The decoder multiplies an nn.Linear head's weight itself; an int8 head it must call, so
        # that its logits are the int8 layer's (not a dequantized fp32 copy's, as slow as fp32).
        h = q.hidden(x)[:, -1]
        assert torch.equal(Decoder(q, x).logits(), q.lm_head(h))
    # The next-token distributions agree: KL(fp32 || int8) below 1e-3 nats per row (measured: at most
    # 1.3e-4; single logits of unlikely tokens move by up to 0.3), and the same argmax at every row.
    log_ref, log_got = ref.log_softmax(-1), got.log_softmax(-1)
    kl = (log_ref.exp() * (log_ref - log_got)).sum(-1)
    assert (kl < 1e-3).all(), kl
    assert not torch.equal(got, ref)  # the int8 weights changed the logits: they ran
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_an_untied_head_adds_its_bias_once_when_decoding():
    """The int8 kernel adds a layer's bias itself, and the decoder adds ``lm_head.bias`` after its
    own product by an nn.Linear head's weight: an untied head with a bias must get it exactly once."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=8, embedding_dim=32, num_layers=1, heads=2, head_size=16,
                          tie_weights=False)).eval()
    with torch.no_grad():
        model.lm_head.bias.uniform_(-3, 3)  # far above the int8 error
    q = quantized(model)
    x = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():  # the decoder's prefill runs the cache: its inputs' rounding may differ
        torch.testing.assert_close(Decoder(q, x).logits(), q(x)[0][:, -1], rtol=0, atol=0.05)
        torch.testing.assert_close(Decoder(q, x).logits(), model(x)[0][:, -1], rtol=0, atol=0.1)


def test_int8_decoding_keeps_the_memorized_text_batched_cached_and_sampled(overfit):
    """An overfit model's continuation of its text survives int8 weights: greedy and sampled
    (the seeded draw from near-identical, peaked distributions), with and without the KV cache,
    for a batch of prompts of different lengths."""
    q = quantized(overfit)
    ids = text_prompts(3, 5)
    n = 2 * BLOCK  # past block_size: the window slides
    greedy = generate(overfit, ids, n, temperature=0)
    for use_cache in (True, False):
        assert generate(q, ids, n, temperature=0, use_cache=use_cache) == greedy
    prompts = [TEXT[:3], TEXT[7:12], TEXT[14:17]]  # lengths 3, 5, 3: two batches
    sampled = {name: generate_many(m, prompts, n, temperature=0.8, top_k=5,
                                   generator=torch.Generator().manual_seed(0))
               for name, m in (("fp32", overfit), ("int8", q))}
    assert sampled["int8"] == sampled["fp32"]
    assert all(len(set(row)) > 3 for row in sampled["int8"])  # text, not one token repeated


def test_int8_perplexity_goes_through_the_quantized_head(overfit):
    ids = torch.tensor(TEXT * 2)
    fp32 = logits_loss(overfit, ids)
    with torch.inference_mode():  # logits_loss is the training loss's value on the same windows
        w = ids.unfold(0, BLOCK + 1, BLOCK)
        torch.testing.assert_close(fp32, overfit(w[:, :-1], w[:, 1:])[1].item(), rtol=1e-5, atol=1e-6)
    q = quantized(overfit)
    int8 = logits_loss(q, ids)
    other = copy.deepcopy(overfit)
    with torch.no_grad():
        other.tok_emb.weight.mul_(1.5)
    q.lm_head = Int8Linear(other.lm_head)  # a different int8 head only: the loss must see it
    assert logits_loss(q, ids) != int8
    assert abs(int8 - fp32) < 0.02 and int8 != fp32


def test_quantize_option_is_checked_with_the_device():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for overrides, message in [
            (["quantize=int4"], r"quantize=int4: must be null \(fp32\) or int8 \(int8 weights, CPU\)$"),
            (["quantize=int8", "device=cuda:1"], r"quantize=int8 with device=cuda:1: int8 decoding runs on the CPU"),
        ]:
            with pytest.raises(ConfigError, match=message):
                validate_generate(compose("generate", overrides=overrides))
        validate_generate(compose("generate", overrides=["quantize=int8", "device=auto"]))


def test_cli_refuses_a_bad_quantize_in_one_line_before_torch(clean_env):
    proc = run("generate.py", "quantize=int4", env=clean_env, python=("-X", "importtime"))
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert_refused(proc, r"quantize=int4: must be null \(fp32\) or int8 \(int8 weights, CPU\)$")
    assert proc.stdout == ""


def test_cli_quantize_int8_end_to_end(run_cli, tmp_path):
    """`generate.py quantize=int8` decodes with int8 weights: on this checkpoint int8 changes the greedy
    text, and the CLI prints the int8 text, not the fp32 one."""
    model = tiny_model(vocab=50257, block=16, width=16)
    with torch.no_grad():  # one large weight in each row of the tied head: int8's step in that row
        model.tok_emb.weight[:, 0] = 10.0  # (10/127) rounds the small others to 0, so the texts differ
    ckpt = save_ckpt(tmp_path / "m.ckpt", model)
    enc, prompt, n = get_encoding("gpt2"), "Backpropagation is", 12
    texts = {}
    for mode in ("fp32", "int8"):
        model = load_model(ckpt).model
        if mode == "int8":
            quantize_int8(model)
        texts[mode] = prompt + enc.decode(generate(model, torch.tensor([enc.encode(prompt)]), n, temperature=0)[0])
    assert texts["int8"] != texts["fp32"]  # else this checkpoint could not tell the modes apart
    proc = run_cli("generate.py", f"ckpt={ckpt}", f"prompt={prompt}", "temperature=0", f"max_new_tokens={n}",
                   "stop_at_eot=false", "quantize=int8")
    assert proc.stdout == texts["int8"] + "\n"
    assert "int8 weights: " in proc.stderr and " MB -> " in proc.stderr
