"""Rotary position embeddings (Su et al., RoFormer; the GPT speedrun's ``rotary``): each pair of
a head's channels (i, i + head_size/2) is rotated by the angle ``position * base^(-2i/head_size)``
in the queries and keys, so a query-key score depends on the two positions only through their
offset. No parameters: the tables are buffers, outside the state dict."""

from __future__ import annotations

import torch

BASE = 10000.0  # the RoFormer / GPT-NeoX base


def rotary_tables(positions: int, head_size: int, base: float = BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angles: two (positions, head_size / 2) tables, fp32."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
    angles = torch.outer(torch.arange(positions, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` (..., T, head_size) rotated by the (T, head_size / 2) tables of its positions."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
