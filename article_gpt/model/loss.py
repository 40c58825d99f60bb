"""Output projection + cross-entropy over vocabulary chunks, never materializing all logits.

At small widths the 50k-vocabulary head and its loss are most of a training step (see
README, Performance): the (tokens x 50257) logits are written, read by the softmax, written
again as gradients and read by two more matmuls, far more memory traffic than compute.

Here the loss walks the vocabulary in chunks, keeping one (tokens x chunk) block in cache at
a time, and computes the gradients in the forward pass (the approach of Liger-Kernel's fused
linear cross-entropy and of Cut Cross-Entropy), so the backward pass only scales them:
1. each chunk's logits feed an online log-sum-exp (no (tokens x vocab) buffer);
2. each chunk's logits, recomputed, become p = softmax, which goes straight into
   d hidden += p @ W_c and d W_c = p^T @ hidden;
3. the target's one-hot part of softmax - onehot is subtracted once at the end, as a gather
   of the target rows of W and an index_add into d W, so no chunk needs a mask.
The target logits are dot products of each hidden state with its target's row of W.

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


def _log_sum_exp(x, weight, bias, chunk: int) -> torch.Tensor:
    """Per-row log-sum-exp of ``x @ W.T + b`` (fp32), one vocabulary chunk at a time."""
    lse = torch.full((x.size(0),), float("-inf"), device=x.device, dtype=_acc(x))
    for lo in range(0, weight.size(0), chunk):
        logits = F.linear(x, weight[lo : lo + chunk], None if bias is None else bias[lo : lo + chunk]).to(lse.dtype)
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


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk: int, ignore_index: int):
        amp_dtype, valid, safe, count = _prepare(x, weight, bias, targets, ignore_index)
        lse = _log_sum_exp(x, weight, bias, chunk)
        loss = _loss(lse, _target_logits(x, weight, bias, safe, amp_dtype), valid, count)

        # d loss / d logits = (softmax - onehot) * row_scale, with row_scale 0 on ignored rows
        acc = _acc(x)
        row_scale = valid.to(acc) / count.clamp(min=1)
        xf = x.to(acc)
        grad_x = torch.zeros_like(xf)
        grad_w = torch.empty(weight.shape, device=x.device, dtype=acc) if ctx.needs_input_grad[1] else None
        grad_b = torch.empty(bias.shape, device=x.device, dtype=acc) if ctx.needs_input_grad[2] else None
        for lo in range(0, weight.size(0), chunk):
            w_c, hi = weight[lo : lo + chunk], min(lo + chunk, weight.size(0))
            p = F.linear(x, w_c, None if bias is None else bias[lo:hi]).to(acc)
            p.sub_(lse[:, None]).exp_().mul_(row_scale[:, None])
            if amp_dtype is None:  # fp32: write into the accumulators, no temporaries
                grad_x.addmm_(p, w_c.to(acc))
                if grad_w is not None:
                    torch.mm(p.t(), xf, out=grad_w[lo:hi])
            else:  # autocast: the matmuls in its dtype, as the plain path's backward does
                grad_x += p.to(amp_dtype) @ w_c.to(amp_dtype)
                if grad_w is not None:
                    grad_w[lo:hi] = p.t().to(amp_dtype) @ x.to(amp_dtype)
            if grad_b is not None:
                grad_b[lo:hi] = p.sum(0)
        # the one-hot part, once for all chunks
        onehot_x = xf * row_scale[:, None]
        grad_x.sub_(weight[safe].to(acc) * row_scale[:, None])
        if grad_w is not None:
            grad_w.index_add_(0, safe, onehot_x, alpha=-1.0)
        if grad_b is not None:
            grad_b.index_add_(0, safe, row_scale, alpha=-1.0)
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
        return out[0], out[1], out[2], None, None, None


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean cross-entropy of ``x @ weight.T + bias`` (x: (N, d), weight: (V, d)) against targets (N,),
    over the targets that are not ``ignore_index``.

    ``chunk > 0`` walks the vocabulary ``chunk`` rows at a time (fused, low memory);
    ``chunk = 0`` materializes the logits and calls ``F.cross_entropy``.
    """
    if chunk <= 0 or chunk >= weight.size(0):
        return F.cross_entropy(F.linear(x, weight, bias).to(_acc(x)), targets, ignore_index=ignore_index)
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if wants_grad:
        return _FusedLinearCrossEntropy.apply(x, weight, bias, targets, chunk, ignore_index)
    # no gradient wanted (validation): the log-sum-exp pass alone
    amp_dtype, valid, safe, count = _prepare(x, weight, bias, targets, ignore_index)
    return _loss(_log_sum_exp(x, weight, bias, chunk), _target_logits(x, weight, bias, safe, amp_dtype), valid, count)
