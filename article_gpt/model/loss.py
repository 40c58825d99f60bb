"""Output projection + cross-entropy over vocabulary chunks, never materializing all logits.

At small widths the 50k-vocabulary head and its loss are most of a training step (see
docs/performance.md): three (tokens x vocab x width) matmuls (the logits and the two
gradients) against a few light layers. This loss computes the gradients in the forward pass
(the approach of Liger-Kernel's fused linear cross-entropy and of Cut Cross-Entropy), so the
backward pass only scales them, and runs exactly those three matmuls, each on a
(tokens x chunk) block that stays in cache:
1. per vocabulary chunk: logits, then e = exp(logits - running row max), which feeds the
   softmax denominator and d hidden += e @ W_c at once; both are rescaled when the running
   max grows (the online softmax of FlashAttention). e is kept in a reused workspace.
2. once the log-sum-exp is known, per chunk: d W_c = e^T @ (hidden * exp(max_c - lse)),
   the softmax's per-row scale folded into the small (tokens x width) side.
3. the target's one-hot part of softmax - onehot is subtracted once at the end, as a gather
   of the target rows of W and an index_add into d W, so no chunk needs a mask.
Keeping e instead of recomputing the logits saves a fourth matmul and a second exp for one
write and one read of the workspace. The workspace is bounded (``WORKSPACE_BYTES``): longer
batches run in blocks of tokens, and it is reused from step to step, since a fresh buffer
that size costs a page fault per 4 KiB on every step.
The target logits are dot products of each hidden state with its target's row of W.
A soft-cap c (logits z -> c * tanh(z / c), ``softcap``) is applied to each chunk's logits in
place; its derivative 1 - tanh^2 multiplies e once the denominator has it, and the target's
one-hot part, so the gradients stay those of the capped loss.

The result equals ``F.cross_entropy(x @ W.T + b, t, ignore_index=...)``: the mean over the
targets that are not ``ignore_index`` (NaN when every target is ignored, as there), with the
ignored rows contributing nothing to any gradient. Under autocast every matmul runs in the
autocast dtype, as in the plain path; sums and gradients accumulate in fp32 (float64 for
float64 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # F.cross_entropy's default, the convention for padding
WORKSPACE_BYTES = 256 << 20  # the most the kept exp(logits) may hold; more tokens run in blocks
_workspaces: dict[tuple, torch.Tensor] = {}


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat buffer of at least ``numel`` elements, kept between calls (one per device and dtype)."""
    key = (device, dtype)
    buf = _workspaces.get(key)
    if buf is None or buf.numel() < numel:
        _workspaces.pop(key, None)  # free the old one before the larger one is allocated
        buf = _workspaces[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf


def _check_targets(targets: torch.Tensor, valid: torch.Tensor, vocab: int) -> None:
    bad = valid & ((targets < 0) | (targets >= vocab))
    if targets.device.type == "cpu":  # free on the CPU; a device would wait for it
        if bool(bad.any()):
            t = int(targets[bad][0])
            raise IndexError(f"target {t} is out of bounds for a vocabulary of {vocab} (and is not ignore_index)")
    else:
        torch._assert_async(~bad.any(), "a target is out of bounds for the vocabulary")


def _acc(x: torch.Tensor) -> torch.dtype:
    """The dtype sums and gradients accumulate in: fp32, or float64 for float64 inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def _target_logits(x, weight, bias, safe_targets, amp_dtype):
    """x_i . W[t_i] (+ b[t_i]), accumulated in fp32; under autocast rounded as the chunk
    matmuls round their outputs."""
    acc, w_t = _acc(x), weight[safe_targets]
    if amp_dtype is not None:
        x, w_t = x.to(amp_dtype), w_t.to(amp_dtype)
    logit = (x.to(acc) * w_t.to(acc)).sum(1)
    if bias is not None:
        logit = logit + bias[safe_targets].to(acc)
    return logit if amp_dtype is None else logit.to(amp_dtype).to(acc)


def soft_cap(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """``softcap * tanh(logits / softcap)``; the logits unchanged where ``softcap`` is None."""
    return logits if softcap is None else softcap * torch.tanh(logits / softcap)


def _log_sum_exp(x, weight, bias, chunk: int, softcap: float | None = None) -> torch.Tensor:
    """Per-row log-sum-exp of ``x @ W.T + b`` (fp32), one vocabulary chunk at a time."""
    lse = torch.full((x.size(0),), float("-inf"), device=x.device, dtype=_acc(x))
    for lo in range(0, weight.size(0), chunk):
        logits = F.linear(x, weight[lo : lo + chunk], None if bias is None else bias[lo : lo + chunk]).to(lse.dtype)
        logits = soft_cap(logits, softcap)
        lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
    return lse


def _prepare(x, weight, bias, targets, ignore_index):
    device_type = x.device.type
    amp_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    valid = targets != ignore_index
    _check_targets(targets, valid, weight.size(0))
    safe = torch.where(valid, targets, 0)  # ignored rows read row 0, then weigh nothing
    count = valid.sum()
    return amp_dtype, valid, safe, count


def _loss(lse, target_logit, valid, count):
    return torch.where(valid, lse - target_logit, 0.0).sum() / count  # 0 / 0 = NaN, as in F.cross_entropy


def _exp_pass(xb, weight, bias, chunks, ws, amp_dtype, acc, softcap=None):
    """Pass 1 over one block of tokens: per vocabulary chunk, the logits become
    e = exp(logits - running row max), kept in ``ws``; they feed the softmax denominator and
    the unnormalized d hidden = sum e @ W_c, both rescaled whenever the row max grows.
    Returns the block's log-sum-exp, each chunk's row max, and d hidden / denominator."""
    n = xb.size(0)
    mm = (lambda t: t) if amp_dtype is None else (lambda t: t.to(amp_dtype))  # matmul operands
    run_max = torch.full((n,), float("-inf"), device=xb.device, dtype=acc)
    denom = torch.zeros(n, device=xb.device, dtype=acc)
    gx = torch.zeros(n, xb.size(1), device=xb.device, dtype=acc)
    maxes = torch.empty(len(chunks), n, device=xb.device, dtype=acc)
    for i, (lo, hi) in enumerate(chunks):
        e, w_c = ws[lo * n : hi * n].view(n, hi - lo), weight[lo:hi]
        if amp_dtype is None and bias is None and xb.dtype == acc:
            torch.mm(xb, w_c.t(), out=e)
        else:  # a bias, or autocast: the matmul in its dtype, as the plain path's F.linear
            e.copy_(F.linear(mm(xb), mm(w_c), None if bias is None else bias[lo:hi]))
        if softcap is not None:  # e = c * tanh(z / c); d = its derivative, for the gradients
            d = e.div_(softcap).tanh_().square().neg_().add_(1)
            e.mul_(softcap)
        new_max = torch.maximum(run_max, e.amax(1), out=maxes[i])
        rescale = (run_max - new_max).exp_()  # 0 on the first chunk (-inf)
        e.sub_(new_max[:, None]).exp_()
        denom.mul_(rescale).add_(e.sum(1))
        if softcap is not None:
            e.mul_(d)  # from here on e is d loss / d z up to the row's scale: softmax * cap derivative
        if amp_dtype is None:
            gx.mul_(rescale[:, None]).addmm_(e, w_c.to(acc))
        else:
            gx.mul_(rescale[:, None]).add_(mm(e) @ mm(w_c))
        run_max = new_max
    return run_max + denom.log(), maxes, gx.div_(denom[:, None])


def _head_grad_pass(xb, scale_rows, lse, maxes, chunks, ws, grad_w, grad_b, first, amp_dtype, acc):
    """Pass 2 over one block of tokens: each kept chunk e gives d W_c = e^T @ (x * s) and
    d b_c = e^T @ s, with s = exp(chunk max - lse) * row scale, the softmax's normalization
    folded into the small (tokens x width) side. ``first``: write d W, else add to it."""
    n = xb.size(0)
    xf = xb.to(acc)
    for i, (lo, hi) in enumerate(chunks):
        e = ws[lo * n : hi * n].view(n, hi - lo)
        s = (maxes[i] - lse).exp_().mul_(scale_rows)
        if grad_w is not None:
            xs = xf * s[:, None]
            if amp_dtype is not None:
                part = (e.t().to(amp_dtype) @ xs.to(amp_dtype)).to(acc)
                grad_w[lo:hi] = part if first else grad_w[lo:hi] + part
            elif first:
                torch.mm(e.t(), xs, out=grad_w[lo:hi])
            else:
                grad_w[lo:hi].addmm_(e.t(), xs)
        if grad_b is not None:
            grad_b[lo:hi].addmv_(e.t(), s)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk: int, ignore_index: int, softcap: float | None):
        amp_dtype, valid, safe, count = _prepare(x, weight, bias, targets, ignore_index)
        acc, n_tok, vocab = _acc(x), x.size(0), weight.size(0)
        # d loss / d logits = (softmax - onehot) * row_scale, with row_scale 0 on ignored rows
        row_scale = valid.to(acc) / count.clamp(min=1)
        lse = torch.empty(n_tok, device=x.device, dtype=acc)
        grad_x = torch.empty(x.shape, device=x.device, dtype=acc)
        grad_w = torch.empty(weight.shape, device=x.device, dtype=acc) if ctx.needs_input_grad[1] else None
        grad_b = torch.zeros(bias.shape, device=x.device, dtype=acc) if ctx.needs_input_grad[2] else None
        chunks = [(lo, min(lo + chunk, vocab)) for lo in range(0, vocab, chunk)]
        rows = max(1, min(n_tok, WORKSPACE_BYTES // (vocab * torch.finfo(acc).bits // 8)))
        ws = _workspace(rows * vocab, acc, x.device)
        for r0 in range(0, n_tok, rows):  # blocks of tokens whose exp(logits) fit the workspace
            block = slice(r0, r0 + rows)
            lse[block], maxes, gx = _exp_pass(x[block], weight, bias, chunks, ws, amp_dtype, acc, softcap)
            grad_x[block] = gx * row_scale[block, None]  # softmax @ W: e / denominator, rescaled
            if grad_w is not None or grad_b is not None:
                _head_grad_pass(x[block], row_scale[block], lse[block], maxes, chunks, ws, grad_w, grad_b,
                                r0 == 0, amp_dtype, acc)
        target = soft_cap(_target_logits(x, weight, bias, safe, amp_dtype), softcap)
        loss = _loss(lse, target, valid, count)
        # the one-hot part, once for all chunks (times the cap's derivative at the target)
        onehot = row_scale if softcap is None else row_scale * (1 - (target / softcap).square())
        grad_x.sub_(weight[safe].to(acc) * onehot[:, None])
        if grad_w is not None:
            grad_w.index_add_(0, safe, x.to(acc) * onehot[:, None], alpha=-1.0)
        if grad_b is not None:
            grad_b.index_add_(0, safe, onehot, alpha=-1.0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        # The usual upstream gradient is exactly 1 (loss.backward()): then the saved gradients
        # are the answer. Checking costs a device sync, so only the CPU checks.
        scale = None if grad_out.device.type == "cpu" and float(grad_out) == 1.0 else grad_out
        out = []
        for g, dtype in zip((grad_x, grad_w, grad_b), ctx.dtypes):
            if g is not None and scale is not None:
                g = g * scale
            out.append(None if g is None else g.to(dtype))
        return out[0], out[1], out[2], None, None, None, None


# Never traced by torch.compile (``compile=true`` compiles the model around it): unrolling two
# passes over ~50 vocabulary chunks made compiling a 6-step debug run on the CPU take 4 minutes,
# and the loss is a few large matmuls that compiling cannot speed up. It runs eagerly in between.
@torch.compiler.disable
def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk: int = 0,
    ignore_index: int = IGNORE_INDEX,
    softcap: float | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``x @ weight.T + bias`` (x: (N, d), weight: (V, d)) against targets (N,),
    over the targets that are not ``ignore_index``; with ``softcap`` c, of the logits c * tanh(z / c).

    ``chunk > 0`` walks the vocabulary ``chunk`` rows at a time (fused, low memory);
    ``chunk = 0`` materializes the logits and calls ``F.cross_entropy``.
    """
    if chunk <= 0 or chunk >= weight.size(0):
        logits = soft_cap(F.linear(x, weight, bias).to(_acc(x)), softcap)
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if wants_grad:
        return _FusedLinearCrossEntropy.apply(x, weight, bias, targets, chunk, ignore_index, softcap)
    # no gradient wanted (validation): the log-sum-exp pass alone
    amp_dtype, valid, safe, count = _prepare(x, weight, bias, targets, ignore_index)
    target = soft_cap(_target_logits(x, weight, bias, safe, amp_dtype), softcap)
    return _loss(_log_sum_exp(x, weight, bias, chunk, softcap), target, valid, count)
