"""The inference engine, checkpoint loading and `python generate.py`, end to end.

Unit tests use tiny random models built from GPTConfig; only the end-to-end test trains.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, run_dirs

from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import CheckpointError
from article_gpt.model.checkpoint import load_model
from article_gpt.model.decoding import (
    Decoder,
    TextStream,
    compile_step,
    filter_logits,
    generate,
    generate_many,
    generate_streamed,
    sample_next,
)
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.runs.dirs import resolve_checkpoint

VOCAB, BLOCK = 97, 8


def tiny_model(vocab: int = VOCAB, block: int = BLOCK, width: int = 32) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab, block_size=block, embedding_dim=width, num_layers=2, heads=2,
                    head_size=width // 2, dropout=0.0)
    return GPT(cfg).eval()


def prompts(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# A short "text" of 48 tokens over 12 symbols: each symbol has several successors, so the next token
# depends on the context, not just on the last token. A random tiny model's greedy output collapses to
# one repeated token within a few steps, and two wrong decoders would then agree on it; a model
# overfit on this text continues it, so its greedy output varies and past block_size the window matters.
TEXT = (torch.randint(0, 12, (48,), generator=torch.Generator().manual_seed(0)) * 7 + 3).tolist()


@pytest.fixture(scope="module")
def overfit() -> GPT:
    """The tiny model trained on TEXT to its loss floor, with one thread whatever the machine: how
    torch splits a sum over threads moves the weights by rounding, and near-tied continuations
    then came out differently with one thread and with two. One thread gives the same model under
    any core count or pytest worker, and every test below passes at one thread and at two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny_model()
        cyclic = torch.tensor(TEXT + TEXT[: BLOCK + 1])
        windows = torch.stack([cyclic[i : i + BLOCK + 1] for i in range(len(TEXT))])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        model.train()
        for _ in range(400):  # about 200 steps on any seed tried; the loss floor (~0.2) is the text's first tokens
            _, loss = model(windows[:, :-1], windows[:, 1:])
            if loss.item() < 0.3:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.3, f"the model did not learn the text (loss {loss.item():.3f})"
    return model.eval()


def text_prompts(batch: int, length: int) -> torch.Tensor:
    """Prompts cut from the text at different offsets."""
    cyclic = TEXT * (1 + (length + 7 * batch) // len(TEXT))
    return torch.tensor([cyclic[7 * i : 7 * i + length] for i in range(batch)])


def varied(rows: list[list[int]], distinct: int = BLOCK + 1) -> bool:
    """Each row holds at least ``distinct`` different tokens: text a wrong decoder would not repeat."""
    return all(len(set(r)) >= distinct for r in rows)


@torch.inference_mode()
def reference_greedy(model: GPT, ids: torch.Tensor, n: int) -> list[list[int]]:
    """Greedy decoding written out: every step runs the last block_size tokens from scratch."""
    for _ in range(n):
        logits, _ = model(ids[:, -model.cfg.block_size :])
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, -n:].tolist()


# ---- KV cache and sliding window ---------------------------------------------------------
def count_tokens_seen(model: GPT) -> list[int]:
    """Record how many tokens each call of ``model.hidden`` (prefill, step or window) is fed."""
    seen: list[int] = []
    hidden = model.hidden

    def counted(idx, caches=None):
        seen.append(idx.size(1))
        return hidden(idx, caches)

    model.hidden = counted  # an instance attribute: the decoder's every call goes through it
    return seen


@pytest.mark.parametrize("prompt_len", [3, BLOCK + 4])  # shorter than, and longer than, the window
def test_cached_logits_match_uncached_past_block_size(overfit, prompt_len):
    model, steps = overfit, 3 * BLOCK
    seen = count_tokens_seen(model)
    try:
        cached, plain = Decoder(model, text_prompts(2, prompt_len), True), Decoder(model, text_prompts(2, prompt_len),
                                                                                    False)
        with torch.inference_mode():
            for _ in range(steps):  # prefill, one-token steps, a full window, then sliding
                a, b = cached.logits(), plain.logits()
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
                nxt = b.argmax(-1)
                cached.append(nxt)
                plain.append(nxt)
    finally:
        del model.hidden
    cached_seen, plain_seen = seen[0::2], seen[1::2]
    lengths = [prompt_len + i for i in range(steps)]  # tokens known before each step
    # cached: the prompt once, then exactly one token a step until the window is full, then the window
    prefill = [prompt_len] if prompt_len < BLOCK else []
    one_token_steps = [1] * len([t for t in lengths[1:] if t <= BLOCK]) if prefill else []
    assert cached_seen == prefill + one_token_steps + [BLOCK] * (steps - len(prefill) - len(one_token_steps))
    assert plain_seen == [min(t, BLOCK) for t in lengths]  # uncached: every step recomputes the window


def test_generate_feeds_one_token_a_step_after_the_prefill(overfit):
    seen = count_tokens_seen(overfit)
    try:
        generate(overfit, text_prompts(3, 2), BLOCK - 2, temperature=0)
    finally:
        del overfit.hidden
    assert seen == [2] + [1] * (BLOCK - 3)  # the last new token is sampled, never fed


@pytest.mark.parametrize("prompt_len", [1, 5, BLOCK + 4])
def test_cached_greedy_equals_uncached_and_reference(overfit, prompt_len):
    ids = text_prompts(3, prompt_len)
    n = 3 * BLOCK
    cached = generate(overfit, ids, n, temperature=0, use_cache=True)
    assert varied(cached), cached
    assert cached == generate(overfit, ids, n, temperature=0, use_cache=False)
    assert cached == reference_greedy(overfit, ids, n)
    if prompt_len == 5:  # the model continues the text it learned
        start = 7 * 1 + prompt_len
        assert cached[1][: len(TEXT) - start] == TEXT[start : start + n]


# ---- sampling controls ---------------------------------------------------------------------
def test_greedy_is_deterministic_and_a_seed_repeats_samples(overfit):
    model, ids = overfit, text_prompts(2, 4)
    greedy = generate(model, ids, 12, temperature=0)
    assert varied(greedy, 5) and greedy == generate(model, ids, 12, temperature=0)

    def sampled(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        return generate(model, ids, 12, temperature=2.0, top_k=40, top_p=0.99, generator=gen)

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)


def test_top_k_1_is_greedy(overfit):
    model, ids = overfit, text_prompts(2, 4)
    gen = torch.Generator().manual_seed(0)
    greedy = generate(model, ids, 12, temperature=0)
    assert varied(greedy, 5) and generate(model, ids, 12, temperature=1.5, top_k=1, generator=gen) == greedy
    logits = torch.randn(16, VOCAB)
    assert torch.equal(sample_next(logits, 2.0, top_k=1), logits.argmax(-1))


def kept(logits: torch.Tensor, **kw) -> list[list[bool]]:
    return filter_logits(logits, **kw).isfinite().tolist()


def test_top_p_keeps_the_smallest_nucleus():
    # two rows, the same distribution in two orders: filtering is row-wise
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    logits = probs.log()
    assert kept(logits, top_p=0.8) == [[True, True, False, False], [False, False, True, True]]
    assert kept(logits, top_p=0.81) == [[True, True, True, False], [False, True, True, True]]
    assert kept(logits, top_p=0.5) == [[True, False, False, False], [False, False, False, True]]
    assert kept(logits, top_p=1e-9) == kept(logits, top_p=0.5)  # the top token always stays
    assert kept(logits, top_p=1.0) == [[True] * 4] * 2
    # with top-k the nucleus is taken in the renormalized top-k: 0.625, 0.375
    assert kept(logits, top_k=2, top_p=0.6) == kept(logits, top_p=0.5)
    assert kept(logits, top_k=2, top_p=0.7) == kept(logits, top_p=0.8)
    assert kept(logits * 3, top_k=3) == kept(logits, top_p=0.81)


def test_sampling_draws_only_from_the_nucleus_in_proportion():
    logits = torch.tensor([[0.05, 0.5, 0.15, 0.3]]).log().repeat(4000, 1)
    ids = sample_next(logits, 1.0, top_p=0.8, generator=torch.Generator().manual_seed(0))
    assert set(ids.tolist()) == {1, 3}
    assert abs((ids == 1).float().mean().item() - 0.5 / 0.8) < 0.03


def test_rows_stop_at_eos_independently(overfit):
    model, ids = overfit, text_prompts(2, 3)
    greedy = generate(model, ids, 16, temperature=0)
    eos = greedy[0][5]
    assert greedy[0].index(eos) == 5 and greedy[1][:6].count(eos) == 0  # the rows stop at different steps
    out = generate(model, ids, 16, temperature=0, eos_id=eos)
    for row, full in zip(out, greedy):
        assert row == (full[: full.index(eos)] if eos in full else full)


def test_prompts_of_different_lengths_are_grouped_and_kept_in_order(overfit):
    model = overfit
    # lengths 3, 5, 3 (grouped with the first), BLOCK + 4 and 1; TEXT's first token, because the
    # one-token prompt of a token that recurs in TEXT may continue as a longer prompt here does
    many = [TEXT[3:6], TEXT[5:10], TEXT[9:12], TEXT[12 : 2 * BLOCK + 8], TEXT[:1]]
    together = generate_many(model, many, 10, temperature=0)
    assert len({tuple(t) for t in together}) == len(many)  # distinct continuations: order matters
    assert together == [generate(model, torch.tensor([p]), 10, temperature=0)[0] for p in many]


# ---- streaming text --------------------------------------------------------------------------
def test_stream_never_shows_half_a_character():
    enc = get_encoding("gpt2")
    text = "naïve café, 日本語 and emoji 😀🧠 done"
    ids = enc.encode(text)
    split = [i for i in ids if not _valid_utf8(enc.decode_single_token_bytes(i))]
    assert split, "the text should have characters split across tokens"
    stream = TextStream(enc)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # arbitrary ids (invalid UTF-8 included) stream to exactly what decode gives
    rand = torch.randint(0, enc.n_vocab, (300,), generator=torch.Generator().manual_seed(0)).tolist()
    stream = TextStream(enc)
    assert "".join(stream.push(i) for i in rand) + stream.flush() == enc.decode(rand)


def _valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_generate_streamed_writes_the_decoded_continuation():
    model, enc = tiny_model(vocab=50257, width=16), get_encoding("gpt2")
    pieces: list[str] = []
    new = generate_streamed(model, enc, enc.encode("Hello"), 2 * BLOCK, pieces.append, temperature=0)
    assert len(new) == 2 * BLOCK
    assert "".join(pieces) == enc.decode(new)


# ---- checkpoints -----------------------------------------------------------------------------
def save_ckpt(path: Path, model: GPT, **model_overrides) -> Path:
    """A checkpoint laid out as GPTModule saves it (hyper_parameters + model.* state_dict)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hparams = {"model": {**model.cfg.to_dict(), **model_overrides}, "tokenizer": "gpt2", "compile": False}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": hparams, "state_dict": state, "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def gpt2_vocab_model() -> GPT:
    return tiny_model(vocab=50257, block=16, width=16)


def test_checkpoint_rebuilds_the_same_model(tmp_path, gpt2_vocab_model):
    loaded = load_model(save_ckpt(tmp_path / "m.ckpt", gpt2_vocab_model))
    model = loaded.model
    assert loaded.tokenizer == "gpt2" and not model.training
    assert model.lm_head.weight is model.tok_emb.weight  # still tied
    original = gpt2_vocab_model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    ids = prompts(2, 5)
    with torch.inference_mode():  # equal up to float rounding (memory alignment can change kernels)
        torch.testing.assert_close(model(ids)[0], gpt2_vocab_model(ids)[0], atol=1e-6, rtol=0)


def test_checkpoint_resolution(tmp_path):
    def touch(rel: str, mtime: int) -> Path:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        os.utime(p, (mtime, mtime))
        return p

    old_best = touch("runs/a/checkpoints/best.ckpt", 100)
    only_last = touch("runs/b/checkpoints/last.ckpt", 200)
    sweep_best = touch("sweeps/s/0/checkpoints/best.ckpt", 150)
    touch("sweeps/s/0/checkpoints/last.ckpt", 300)  # this job trained last: its best wins
    assert resolve_checkpoint("latest", tmp_path) == sweep_best
    assert resolve_checkpoint(str(tmp_path / "runs/a"), tmp_path) == old_best
    assert resolve_checkpoint(str(tmp_path / "runs/b"), tmp_path) == only_last
    assert resolve_checkpoint(str(tmp_path / "runs/a/checkpoints"), tmp_path) == old_best
    assert resolve_checkpoint(str(only_last), tmp_path) == only_last
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)
    with pytest.raises(CheckpointError, match="ckpt=latest"):
        resolve_checkpoint("latest", tmp_path / "empty")
    with pytest.raises(CheckpointError, match="without checkpoints/best.ckpt"):
        resolve_checkpoint(str(tmp_path / "runs"), tmp_path)


def bad_checkpoint(kind: str, path: Path, model: GPT) -> Path:
    """A checkpoint file that must be refused, of the given kind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "architecture":  # weights of head_size 8 under hyper_parameters saying 16
        return save_ckpt(path, model, head_size=16)
    if kind == "foreign":
        torch.save({"weight": torch.zeros(3)}, path)
    elif kind == "pickled":  # hyper_parameters as an object: weights_only refuses to unpickle it
        torch.save({"hyper_parameters": argparse.Namespace(lr=1)}, path)
    elif kind == "corrupted":
        good = save_ckpt(path.with_name("good.ckpt"), model).read_bytes()
        path.write_bytes(good[: len(good) // 2])
    return path


BAD_CKPT = {
    "architecture": "state_dict does not match its hyper_parameters.model (another architecture?): "
    "model.blocks.0.attn.qkv.weight has shape (48, 16), hyper_parameters.model gives (96, 16)",
    "foreign": "not an Article GPT checkpoint",
    "pickled": "weights_only=True refuses",
    "corrupted": "corrupted or not a torch checkpoint",
}


@pytest.mark.parametrize("kind", BAD_CKPT)
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, gpt2_vocab_model, kind):
    path = bad_checkpoint(kind, tmp_path / f"{kind}.ckpt", gpt2_vocab_model)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert BAD_CKPT[kind] in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


# ---- the CLI -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_generate_from_a_trained_run_and_from_latest(run_cli, outputs, tmp_path):
    run_cli("train.py", *TINY, "logger=none")
    (run_dir,) = run_dirs(outputs)
    proc = run_cli("generate.py", f"ckpt={run_dir}", "prompt=Backpropagation is", "max_new_tokens=12")
    assert proc.stdout.startswith("Backpropagation is") and len(proc.stdout) > len("Backpropagation is\n")
    assert f"checkpoint: {run_dir / 'checkpoints' / 'best.ckpt'}" in proc.stderr

    prompt_file, out = tmp_path / "prompts.txt", tmp_path / "texts" / "out.txt"
    prompt_file.write_text("Deep learning\n\nBackpropagation is\n", encoding="utf-8")
    proc = run_cli("generate.py", "ckpt=latest", f"paths.log_dir={outputs}", f"prompt_file={prompt_file}",
                   "num_samples=2", "max_new_tokens=20", "temperature=0.9", "seed=3", f"out={out}")
    blocks = out.read_text(encoding="utf-8").split("=== ")[1:]
    assert proc.stdout == out.read_text(encoding="utf-8")
    assert [b.split(" ===\n")[0] for b in blocks] == [
        "prompt 1/2, sample 1/2", "prompt 1/2, sample 2/2", "prompt 2/2, sample 1/2", "prompt 2/2, sample 2/2"]
    assert [b.split(" ===\n")[1][:13] for b in blocks] == ["Deep learning"] * 2 + ["Backpropagati"] * 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["top_p=1.5"], "error: top_p=1.5: must be a number in (0, 1]"),
        (["top_p=0"], "error: top_p=0: must be a number in (0, 1]"),
        (["temperature=-1"], "error: temperature=-1: must be a number >= 0"),
        (["top_k=0"], "error: top_k=0: must be a positive integer"),
        (["device=tpu"], "error: device=tpu: must be auto, cpu, cuda or cuda:N"),
        (["prompt_file=missing.txt"], "error: prompt_file=missing.txt: cannot be read (No such file or directory)"),
        (["ckpt=missing/model.ckpt"], "error: ckpt=missing/model.ckpt: no such file or directory"),
        *[(kind, f"{kind}.ckpt: {BAD_CKPT[kind][:24]}") for kind in ("architecture", "corrupted")],
    ],
)
def test_cli_bad_input_is_one_line_error(run_cli, tmp_path, gpt2_vocab_model, args, message):
    if isinstance(args, str):
        args = [f"ckpt={bad_checkpoint(args, tmp_path / f'{args}.ckpt', gpt2_vocab_model)}"]
    proc = run_cli("generate.py", *args, check=False)
    assert proc.returncode == 2, proc.stderr  # README: bad input ends with one error line and exit code 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert proc.stdout == ""


# ---- README's generate.py options, in process (real Hydra composition of conf/generate.yaml) -----------
def compose_generate(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("generate", overrides=list(overrides))


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory, gpt2_vocab_model) -> Path:
    return save_ckpt(tmp_path_factory.mktemp("gen") / "m.ckpt", gpt2_vocab_model)


def generate_cli(capsys, ckpt: Path, *overrides: str) -> str:
    """What `python generate.py ckpt=<ckpt> <overrides>` prints on stdout."""
    from article_gpt.generation import run

    capsys.readouterr()
    run(compose_generate(f"ckpt={ckpt}", "device=cpu", *overrides))
    return capsys.readouterr().out


def continuation(model: GPT, prompt: str, n: int, **kw) -> str:
    enc = get_encoding("gpt2")
    ids = enc.encode(prompt) or [enc.eot_token]
    return prompt + enc.decode(generate(model, torch.tensor([ids]), n, **kw)[0])


def test_list_prompts_are_decoded_in_order(capsys, ckpt_file, gpt2_vocab_model):
    out = generate_cli(capsys, ckpt_file, "prompt=[Deep learning,Backpropagation is]", "temperature=0",
                       "max_new_tokens=6", "stop_at_eot=false")
    expected = [continuation(gpt2_vocab_model, p, 6, temperature=0) for p in ("Deep learning", "Backpropagation is")]
    assert out == f"=== prompt 1/2 ===\n{expected[0]}\n\n=== prompt 2/2 ===\n{expected[1]}\n"


def test_seed_null_draws_afresh_and_a_seed_repeats(capsys, ckpt_file):
    args = ("temperature=1.0", "top_k=null", "top_p=null", "max_new_tokens=16", "stop_at_eot=false")
    fresh = [generate_cli(capsys, ckpt_file, "seed=null", *args) for _ in range(2)]
    seeded = [generate_cli(capsys, ckpt_file, "seed=5", *args) for _ in range(2)]
    assert fresh[0] != fresh[1] and seeded[0] == seeded[1]


def test_top_p_null_samples_the_whole_distribution(capsys, ckpt_file, gpt2_vocab_model):
    args = ("temperature=1.0", "top_k=null", "max_new_tokens=16", "stop_at_eot=false", "seed=0")
    unfiltered = generate_cli(capsys, ckpt_file, "top_p=null", *args)
    reference = continuation(gpt2_vocab_model, "Backpropagation is", 16, temperature=1.0,
                             generator=torch.Generator().manual_seed(0))
    assert unfiltered == reference + "\n"
    assert generate_cli(capsys, ckpt_file, "top_p=0.5", *args) != unfiltered  # the option does act


def test_empty_prompt_starts_a_fresh_document(capsys, ckpt_file, gpt2_vocab_model):
    out = generate_cli(capsys, ckpt_file, "prompt=''", "temperature=0", "max_new_tokens=8", "stop_at_eot=false")
    assert out == continuation(gpt2_vocab_model, "", 8, temperature=0) + "\n"  # from <|endoftext|>
    assert out.strip()


# ---- compile=true: one graph for every decode step -------------------------------------------------
def test_compiled_decode_step_compiles_once_without_graph_breaks(overfit):
    """generate.py's compile=true (``compile_step``), traced by dynamo on CPU with a backend that only
    counts graphs: the growing cache position must not recompile per token, nor break the graph
    (a mask flag computed from the symbolic position did both: 4 partial graphs and the step frame
    skipped). The generated code itself (inductor, CUDA) is not run here."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    counters.clear()
    try:
        ids = text_prompts(2, 2)
        compiled = generate(overfit, ids, BLOCK - 1, temperature=0, step_fn=compile_step(overfit, counting_backend))
        assert compiled == generate(overfit, ids, BLOCK - 1, temperature=0)  # 5 one-token steps, then a window
        assert len(graphs) == 1 and not counters["graph_break"], dict(counters["graph_break"])
    finally:
        torch._dynamo.reset()
