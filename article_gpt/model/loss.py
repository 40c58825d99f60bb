"""Output projection + cross-entropy over vocabulary chunks, never materializing all logits.

At small widths the 50k-vocabulary head and its loss are most of a training step (see
README, Performance): the (tokens x 50257) logits are written, read by the softmax, written
again as gradients and read by two more matmuls, far more memory traffic than compute.
Here the forward pass walks the vocabulary in chunks with an online log-sum-exp, keeping
one (tokens x chunk) block in cache at a time, and saves only the per-token log-sum-exp.
The backward pass recomputes each chunk's logits and turns them straight into the chunk's
share of the gradients: d hidden += p @ W_c and d W_c = p^T @ hidden, with
p = softmax - onehot(target). The result equals ``F.cross_entropy(x @ W.T + b, t)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _chunk_logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
    return F.linear(x, w[lo:hi], None if b is None else b[lo:hi]).float()


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk: int):
        n = x.size(0)
        lse = torch.full((n,), float("-inf"), device=x.device, dtype=torch.float32)
        target_logit = torch.empty(n, device=x.device, dtype=torch.float32)
        rows = torch.arange(n, device=x.device)
        for lo in range(0, weight.size(0), chunk):
            hi = min(lo + chunk, weight.size(0))
            logits = _chunk_logits(x, weight, bias, lo, hi)
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
            inside = (targets >= lo) & (targets < hi)
            idx = rows[inside]
            target_logit[idx] = logits[idx, targets[idx] - lo]
        ctx.save_for_backward(x, weight, bias, targets, lse)
        ctx.chunk = chunk
        # The backward pass recomputes the logits; under autocast (bf16-mixed) it must do so in
        # the same precision, or its softmax would not match the log-sum-exp saved here.
        device = x.device.type
        ctx.amp = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        return (lse - target_logit).mean()

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, targets, lse = ctx.saved_tensors
        n, chunk = x.size(0), ctx.chunk
        device_type, amp_on, amp_dtype = ctx.amp
        xf = x.float()  # gradients accumulate in fp32 whatever the autocast dtype
        grad_x = torch.zeros_like(xf)
        grad_w = torch.empty_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        grad_b = torch.empty_like(bias, dtype=torch.float32) if bias is not None else None
        rows = torch.arange(n, device=x.device)
        for lo in range(0, weight.size(0), chunk):
            hi = min(lo + chunk, weight.size(0))
            with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_on):
                logits = _chunk_logits(x, weight, bias, lo, hi)
            p = (logits - lse[:, None]).exp_()  # softmax on this chunk
            inside = (targets >= lo) & (targets < hi)
            p[rows[inside], targets[inside] - lo] -= 1.0
            p.mul_(grad_out.float() / n)  # d mean / d logits
            grad_x.addmm_(p, weight[lo:hi].float())
            if grad_w is not None:
                grad_w[lo:hi] = p.t() @ xf
            if grad_b is not None:
                grad_b[lo:hi] = p.sum(0)
        return (
            grad_x.to(x.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
        )


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk: int = 0
) -> torch.Tensor:
    """Mean cross-entropy of ``x @ weight.T + bias`` (x: (N, d), weight: (V, d)) against targets (N,).

    ``chunk > 0`` walks the vocabulary ``chunk`` rows at a time (fused, low memory);
    ``chunk = 0`` materializes the logits and calls ``F.cross_entropy``.
    """
    if chunk <= 0 or chunk >= weight.size(0):
        return F.cross_entropy(F.linear(x, weight, bias).float(), targets)
    return _ChunkedLinearCrossEntropy.apply(x, weight, bias, targets, chunk)
