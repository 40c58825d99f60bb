"""The fused chunked head + loss equals the plain one, in value and in every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.model.loss import linear_cross_entropy


def _grads(chunk: int, x, w, b, t):
    params = [p.detach().clone().requires_grad_() for p in (x, w) + ((b,) if b is not None else ())]
    loss = linear_cross_entropy(params[0], params[1], params[2] if b is not None else None, t, chunk)
    loss.backward()
    return loss.detach(), [p.grad for p in params]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [7, 64, 100])  # 7 and 64 do not divide the vocabulary of 300
def test_chunked_equals_plain(chunk, bias):
    g = torch.Generator().manual_seed(0)
    n, d, v = 24, 16, 300
    x, w = torch.randn(n, d, generator=g), torch.randn(v, d, generator=g)
    b = torch.randn(v, generator=g) if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    t[:3] = torch.tensor([0, v - 1, chunk])  # first, last and a chunk's first column
    ref = F.cross_entropy(F.linear(x, w, b), t)
    loss, grads = _grads(chunk, x, w, b, t)
    plain_loss, plain_grads = _grads(0, x, w, b, t)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(plain_loss, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_scaled_upstream_gradient():
    """d(k * loss) = k * d loss: the backward uses the incoming gradient, not an assumed 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=g, requires_grad=True)
    w = torch.randn(50, 4, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (8,), generator=g)
    (3.0 * linear_cross_entropy(x, w, None, t, 16)).backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    (3.0 * F.cross_entropy(x @ w.t(), t)).backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-7)


def test_model_with_fused_loss_trains_like_the_plain_one():
    """Same loss and same gradients for every parameter, tied embedding included."""
    cfg = dict(embedding_dim=32, num_layers=2, heads=2, head_size=16, block_size=16, dropout=0.0)
    torch.manual_seed(0)
    plain = GPT(GPTConfig(**cfg, loss_chunk_size=0))
    fused = GPT(GPTConfig(**cfg, loss_chunk_size=4096))
    fused.load_state_dict(plain.state_dict())
    x, y = (torch.randint(0, 50257, (3, 16), generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    logits, loss_plain = plain(x, y)
    none, loss_fused = fused(x, y)
    assert logits.shape == (3, 16, 50257) and none is None  # fused never builds the logits
    loss_plain.backward()
    loss_fused.backward()
    torch.testing.assert_close(loss_fused, loss_plain, rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_autocast_backward_matches_its_forward():
    """Under bf16 autocast the fused gradient is the plain autocast one up to bf16 rounding
    (the two round different intermediates: exp(logits - running max) here, softmax - onehot
    there), and no further from the float64 gradient than the plain one is."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 32, generator=g, requires_grad=True)
    w = (0.5 * torch.randn(200, 32, generator=g)).requires_grad_()
    t = torch.randint(0, 200, (16,), generator=g)
    x64, w64 = (p.detach().double().requires_grad_() for p in (x, w))
    F.cross_entropy(x64 @ w64.T, t).backward()
    grads, errors = [], []
    for chunk in (0, 48):
        x.grad = w.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = linear_cross_entropy(x, w, None, t, chunk)
        loss.backward()
        grads.append((loss.detach(), x.grad.clone(), w.grad.clone()))
        errors.append(max((x.grad.double() - x64.grad).abs().max(), (w.grad.double() - w64.grad).abs().max()))
    (l0, gx0, gw0), (l1, gx1, gw1) = grads
    torch.testing.assert_close(l1, l0, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gx1, gx0, rtol=2e-2, atol=5e-4)
    torch.testing.assert_close(gw1, gw0, rtol=2e-2, atol=5e-4)
    assert errors[1] <= 1.25 * errors[0], errors  # fused: no less accurate than plain autocast


def _both(x, w, b, t, chunk, **kw):
    """(loss, grads) of the fused path at ``chunk`` and of F.cross_entropy on the full logits."""
    out = []
    for fused in (True, False):
        params = [p.detach().clone().requires_grad_() for p in (x, w) + ((b,) if b is not None else ())]
        bb = params[2] if b is not None else None
        if fused:
            loss = linear_cross_entropy(params[0], params[1], bb, t, chunk, **kw)
        else:
            loss = F.cross_entropy(F.linear(params[0], params[1], bb), t, **kw)
        loss.backward()
        out.append((loss.detach(), [p.grad for p in params]))
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_accuracy_claim_at_the_default_chunk(dtype):
    """The README's claim: at chunk 1024 over GPT-2's whole vocabulary, the fused loss matches
    F.cross_entropy to 1e-9 (loss) and 1e-7 (every gradient) in float64; in fp32 the loss to
    fp32 rounding (1e-6) and the gradients to 1e-7."""
    g = torch.Generator().manual_seed(3)
    n, d, v = 64, 64, 50257
    x = torch.randn(n, d, generator=g, dtype=dtype)  # LayerNorm-scale hidden states
    w = 0.02 * torch.randn(v, d, generator=g, dtype=dtype)  # GPT-2's init scale
    t = torch.randint(0, v, (n,), generator=g)
    (loss, grads), (ref, ref_grads) = _both(x, w, None, t, 1024)
    loss_tol = 1e-9 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(loss, ref, rtol=0, atol=loss_tol)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("ignore_index", [-100, 5])  # the convention, and an id inside the vocabulary
@pytest.mark.parametrize("bias", [True, False])
def test_ignore_index_like_plain(ignore_index, bias):
    """Ignored targets weigh nothing in the mean nor in any gradient, exactly as F.cross_entropy
    does; an ignored row's target logit is never read from memory nobody wrote."""
    g = torch.Generator().manual_seed(4)
    n, d, v = 20, 8, 300
    x, w = torch.randn(n, d, generator=g), torch.randn(v, d, generator=g)
    b = torch.randn(v, generator=g) if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    t[[0, 7, 8, 19]] = ignore_index
    (loss, grads), (ref, ref_grads) = _both(x, w, b, t, 64, ignore_index=ignore_index)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.all(grads[0][[0, 7, 8, 19]] == 0)  # ignored rows get no gradient at all
    with torch.no_grad():  # the validation path (no gradient work) agrees too
        torch.testing.assert_close(linear_cross_entropy(x, w, b, t, 64, ignore_index), ref, rtol=1e-6, atol=1e-6)


def test_every_target_ignored_is_nan_with_zero_gradients():
    x, w = torch.randn(4, 3), torch.randn(10, 3)
    t = torch.full((4,), -100)
    (loss, grads), (ref, ref_grads) = _both(x, w, None, t, 3)
    assert torch.isnan(loss) and torch.isnan(ref)
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.equal(got, want) and not got.any()


@pytest.mark.parametrize("bad", [-5, 10])
def test_out_of_vocabulary_target_raises(bad):
    """A target outside [0, vocab) that is not ignore_index is an error on both paths, never
    a silently wrong loss."""
    x, w = torch.randn(4, 3), torch.randn(10, 3)
    t = torch.tensor([0, 1, 2, bad])
    for chunk in (0, 3):
        with pytest.raises(IndexError):
            linear_cross_entropy(x, w, None, t, chunk)


@pytest.mark.parametrize("bias", [True, False])
def test_token_blocks_when_the_workspace_is_small(monkeypatch, bias):
    """More tokens than the kept exp(logits) workspace holds run in blocks of rows (here 7,
    6 and 6 rows of 10), each block's d W added to the last; the result is unchanged, and the
    buffer is reused by the next call rather than allocated again."""
    from article_gpt.model import loss as loss_mod

    monkeypatch.setattr(loss_mod, "WORKSPACE_BYTES", 7 * 300 * 8)  # 7 rows of 300 float64
    monkeypatch.setattr(loss_mod, "_workspaces", {})
    g = torch.Generator().manual_seed(5)
    n, d, v = 19, 8, 300
    x, w = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(v, d, generator=g, dtype=torch.float64)
    b = torch.randn(v, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    t[3] = -100
    (loss, grads), (ref, ref_grads) = _both(x, w, b, t, 64)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    (buf,) = loss_mod._workspaces.values()
    assert buf.numel() == 7 * 300
    _both(x, w, b, t, 64)
    assert next(iter(loss_mod._workspaces.values())) is buf


def test_compile_leaves_the_fused_loss_eager():
    """``compile=true`` compiles the model around the fused loss, never through it: dynamo
    unrolling its ~50-chunk loops made a 6-step debug run on the CPU take minutes. The model's
    body is one graph with none of the loss's matmuls or exps in it, and the compiled loss and
    gradients equal the eager ones."""
    cfg = GPTConfig(vocab_size=300, block_size=8, embedding_dim=16, num_layers=1, heads=2, head_size=8,
                    loss_chunk_size=64)
    torch.manual_seed(0)
    model = GPT(cfg)
    x, y = (torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    graphs = []

    def backend(gm, example_inputs):  # records what dynamo captured, runs it as is
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    _, loss = torch.compile(model, backend=backend)(x, y)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    _, ref = model(x, y)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    for got, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, rtol=0, atol=0)
    assert len(graphs) == 1
    called = [str(n.target) for n in graphs[0].graph.nodes if n.op in ("call_function", "call_method")]
    assert not [c for c in called if "exp" in c or "mm" in c or "logsumexp" in c], called
