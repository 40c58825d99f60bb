"""Int8 weights for CPU decoding: `python generate.py quantize=int8`.

At batch 1 a decode step multiplies one row by every weight matrix, so it costs the bytes it
reads, not the arithmetic: ``model=small`` reads about 120 MB of fp32 weights per token, 77 MB of
them in the tied output head. Each ``nn.Linear`` (the head included) is replaced by an
``Int8Linear`` that keeps its weight as int8 with one fp32 scale per output row (symmetric,
absmax / 127), a quarter of the bytes. The embeddings stay fp32: a step reads one row of them.

The kernel is torch's own fbgemm int8 GEMM (``torch.ops.quantized.linear_dynamic``, what
``torch.ao.quantization.quantize_dynamic`` builds on): it also rounds each call's input to 7 bits
(one scale per call, "dynamic" quantization) so that it multiplies int8 by int8. Measured on a
2-core AVX-512 EPYC, one thread, torch 2.13, for the 50257 x 384 head at batch 1, it was 3.0x
faster than the fp32 product, while the weight-only kernels were slower than fp32: torch's
``_weight_int8pack_mm`` 4.1x slower, torchao 0.18's eager int8 weight-only 12.7x slower (it
converts the whole weight to fp32 on each call). torch warns that its quantized tensors are
deprecated; the warning is silenced where the weights are packed, once per layer.

``decoding.Decoder`` multiplies by an ``nn.Linear`` head's weight itself (a transposed copy streams
faster); any other head, such as this one, it calls.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from article_gpt.model.gpt import GPT

# fbgemm's default on x86 (as in torch.ao's dynamic Linear): 7-bit inputs, so that the int16
# sums of CPUs without VNNI cannot saturate.
REDUCE_RANGE = True


class Int8Linear(nn.Module):
    """``nn.Linear`` with an int8 weight (out, in) and a per-row fp32 scale; inference only."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float().cpu()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu().clone()
        # A row of zeros keeps scale 1 (any scale gives q = 0): no division by zero.
        scale = w.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "quantized tensors are deprecated": see the module docstring
            q = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
            # fbgemm's blocked int8 layout, the bias included: one call per layer, any leading dims
            self.packed = torch.ops.quantized.linear_prepack(q, bias)
        self.register_buffer("qweight", q.int_repr())  # what dequantized() and the tests read
        self.register_buffer("scale", scale.float())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, REDUCE_RANGE)

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight the int8 one stands for."""
        return self.qweight.float() * self.scale[:, None]


def quantize_int8(model: GPT) -> tuple[int, int]:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an ``Int8Linear``; a tied head gets its
    own int8 copy while the embedding keeps the fp32 table. Returns the bytes of the replaced
    weights before and after (int8 weights + fp32 scales)."""
    before = after = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                q = Int8Linear(child)
                before += child.weight.numel() * child.weight.element_size()
                after += q.qweight.numel() + q.scale.numel() * q.scale.element_size()
                setattr(parent, name, q)
    return before, after


@torch.inference_mode()
def logits_loss(model: GPT, ids: torch.Tensor, block_size: int | None = None) -> float:
    """Mean next-token cross-entropy of ``model`` over the 1-D token ids ``ids``, in windows of
    ``block_size + 1`` tokens every ``block_size`` (as validation reads them).

    Goes through ``model.lm_head(...)``, so a quantized head is what is measured: the training
    loss (``model(x, targets)`` with ``loss_chunk_size > 0``) reads ``lm_head.weight`` itself."""
    T = block_size or model.cfg.block_size
    windows = ids.unfold(0, T + 1, T)
    if windows.size(0) == 0:
        raise ValueError(f"{ids.numel()} tokens: fewer than one window of {T + 1}")
    total = 0.0
    for w in windows:
        logits = model.cap_logits(model.lm_head(model.hidden(w[None, :-1])))
        total += F.cross_entropy(logits[0].float(), w[1:], reduction="sum").item()
    return total / (windows.size(0) * T)
