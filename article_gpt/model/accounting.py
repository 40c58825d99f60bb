"""A run's size and compute as plain arithmetic, without torch: the model's parameter counts and
training FLOPs per token, and the optimizer steps and tokens a budget or an epoch limit gives.

The one home of these formulas: the model (gpt.py) and the compute budget (training/budget.py)
call them while a run trains, and the sweep plan (sweeps/plan.py) calls them before anything
runs, so a plan's numbers are the ones the runs then record (tests/test_plan.py checks both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from article_gpt.errors import ConfigError

LIGHTNING_DEFAULT_EPOCHS = 1000  # Lightning's max_epochs when neither max_epochs nor max_steps is set


def param_counts(vocab_size: int, block_size: int, embedding_dim: int, num_layers: int, heads: int,
                 head_size: int, bias: bool = True, tie_weights: bool = True, position: str = "learned",
                 **_: object) -> dict[str, int]:
    """Total parameters (a tied weight once), those outside the token/position embeddings (Kaplan
    et al.), and those in a matmul per token: every weight but the position table, the token table
    counted once as the (tied) head, or the head if untied. ``position=rope`` has no position
    table; the other GPTConfig fields (GPTConfig.to_dict() is passed whole) take no weights."""
    d, a, v = embedding_dim, heads * head_size, vocab_size
    positions = block_size * d if position == "learned" else 0
    b = 1 if bias else 0
    norm = d * (1 + b)  # a LayerNorm: its gain, and its bias with bias=true
    block = 2 * norm + (d * 3 * a + 3 * a * b) + (a * d + d * b) + (d * 4 * d + 4 * d * b) + (4 * d * d + d * b)
    head = 0 if tie_weights else v * d + b * v  # a tied head shares the embedding and has no bias
    embeddings = v * d + positions
    total = embeddings + num_layers * block + norm + head
    return {"params_total": total, "params_non_embedding": total - embeddings,
            "params_matmul": total - positions - (0 if tie_weights else v * d)}


def flops_per_token(params_matmul: int, num_layers: int, attn_dim: int, seq_len: int) -> int:
    """Training FLOPs per token: 6N for the matmul weights (forward + backward) plus
    12 * layers * attn_dim * T for attention scores and their weighted sum (PaLM, App. B)."""
    return 6 * params_matmul + 12 * num_layers * attn_dim * seq_len


def epoch_step_tokens(windows: int, batch_size: int, window_tokens: int, world_size: int = 1,
                      drop_last: bool = False, limit_batches: int | float = 1.0, accumulate: int = 1) -> list[int]:
    """Tokens (summed over ranks) of each optimizer step of one epoch, in order.

    Each rank reads ``ceil(windows / world_size)`` windows (Lightning's DistributedSampler pads
    the ranks to equal length); ``limit_batches`` follows ``Trainer(limit_train_batches)`` (an int
    is a batch count, a float a fraction); ``accumulate`` batches make one step, and the epoch's
    leftover batches make a last, shorter one, as Lightning steps them.
    """
    per_rank = math.ceil(windows / world_size)
    full, rest = divmod(per_rank, batch_size)
    batches = [batch_size] * full + ([rest] if rest and not drop_last else [])
    if isinstance(limit_batches, int):
        batches = batches[:limit_batches]
    else:
        batches = batches[: int(len(batches) * limit_batches)]
    return [sum(batches[i:i + accumulate]) * window_tokens * world_size
            for i in range(0, len(batches), accumulate)]


def steps_for_budget(budget_tokens: float, step_tokens: Sequence[int]) -> tuple[int, int]:
    """(steps, tokens): the fewest optimizer steps whose tokens reach ``budget_tokens``, epoch
    after epoch of ``step_tokens``, and the tokens those steps train on (at least one step)."""
    epoch = sum(step_tokens)
    if epoch <= 0:
        raise ConfigError("budget: an epoch of this training data has no batches; "
                          "check dataloader.drop_last, dataloader.batch_size and trainer.limit_train_batches")
    epochs = int(budget_tokens // epoch)
    steps, tokens = epochs * len(step_tokens), epochs * epoch
    for t in step_tokens:
        if tokens >= budget_tokens and steps > 0:
            break
        steps, tokens = steps + 1, tokens + t
    return steps, tokens


def budget_tokens(tokens: float | None, flops: float | None, flops_per_token: int) -> float | None:
    """The token budget: ``tokens``, ``flops / flops_per_token``, the smaller of both, or None."""
    limits = [t for t in (tokens, flops / flops_per_token if flops is not None else None) if t is not None]
    return min(limits) if limits else None


def steps_for_limits(step_tokens: Sequence[int], max_epochs: int | None,
                     max_steps: int | None) -> tuple[int, int] | None:
    """(steps, tokens) of a run that ends at Lightning's ``max_epochs`` / ``max_steps`` (the first
    reached; -1 or None: no limit, both unset: Lightning's 1000 epochs); None when neither ends it."""
    if max_epochs is None:
        max_epochs = LIGHTNING_DEFAULT_EPOCHS if max_steps in (None, -1) else -1
    if max_epochs == -1 and max_steps in (None, -1):
        return None
    per_epoch = len(step_tokens)
    steps = per_epoch * max_epochs if max_epochs != -1 else math.inf
    if max_steps not in (None, -1):
        steps = min(steps, max_steps)
    if per_epoch == 0:
        return 0, 0
    epochs, rest = divmod(int(steps), per_epoch)
    return int(steps), epochs * sum(step_tokens) + sum(step_tokens[:rest])
