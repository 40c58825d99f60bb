"""Parameter and FLOP counts written out by hand from the architecture the README describes,
independent of ``GPT.num_params``/``flops_per_token``: the tests hold the code to these."""

from __future__ import annotations


def hand_params(vocab: int, block: int, width: int, layers: int, heads: int, head_size: int,
                bias: bool = True, tied: bool = True) -> int:
    """Token + position tables, ``layers`` pre-LN blocks, a final LayerNorm, and the head."""
    b, attn = int(bias), heads * head_size
    layer_norm = width * (1 + b)  # gain (+ bias)
    attention = (width * 3 * attn + 3 * attn * b) + (attn * width + width * b)  # fused QKV, projection
    feed_forward = (width * 4 * width + 4 * width * b) + (4 * width * width + width * b)
    head = 0 if tied else vocab * width + vocab * b  # untied: weight (+ bias); tied: the token table
    return vocab * width + block * width + layers * (2 * layer_norm + attention + feed_forward) + layer_norm + head


def hand_flops_per_token(vocab: int, block: int, width: int, layers: int, heads: int, head_size: int,
                         bias: bool = True, tied: bool = True) -> int:
    """6 x the weights used in a matmul per token (not the position table; the token table once,
    as the tied head; untied: the head, the token table is a lookup) + attention 12 * L * attn * T."""
    total = hand_params(vocab, block, width, layers, heads, head_size, bias, tied)
    matmul = total - block * width - (0 if tied else vocab * width)
    return 6 * matmul + 12 * layers * heads * head_size * block
