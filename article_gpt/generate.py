"""The one inference engine: KV-cached decoding with temperature, top-k and top-p sampling.

Used by ``generate.py`` (the CLI) and by the training-time samples.

Decoding with the cache: the prompt is run once (prefill), then each step feeds one token.
Positions are learned and absolute, so once the sequence outgrows ``block_size`` the window
slides and every position shifts: cached keys are then stale, and each further step recomputes
the last ``block_size`` tokens, exactly as uncached decoding does. Cached and uncached decoding
therefore give the same logits at every step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from article_gpt.model import GPT


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass ``top_p``.

    The nucleus is the smallest set of most likely tokens whose probabilities sum to at
    least ``top_p``; the most likely token is always kept. Works row-wise on (B, V).
    """
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # mass strictly before each token: a token is needed while that mass is still < top_p
        before = probs.cumsum(dim=-1) - probs
        drop_sorted = before >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V); temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Decoder:
    """Step-by-step next-token logits for a batch of equal-length prompts."""

    def __init__(self, model: GPT, tokens: torch.Tensor, use_cache: bool = True) -> None:
        self.model, self.tokens, self.use_cache = model, tokens, use_cache
        self.block_size = model.cfg.block_size
        self.caches = None

    def logits(self) -> torch.Tensor:
        """Logits (B, V) for the token after ``self.tokens``."""
        T = self.tokens.size(1)
        if self.use_cache and self.caches is not None and self.caches[0].pos == T - 1:
            out, _ = self.model(self.tokens[:, -1:], caches=self.caches)  # one new token
        elif self.use_cache and T < self.block_size:
            self.caches = self.model.new_caches(self.tokens.size(0))  # (re)fill from position 0
            out, _ = self.model(self.tokens, caches=self.caches)
        else:
            self.caches = None  # window full or sliding: positions shift, recompute the window
            out, _ = self.model(self.tokens[:, -self.block_size :])
        return out[:, -1, :]

    def append(self, next_ids: torch.Tensor) -> None:
        self.tokens = torch.cat([self.tokens, next_ids[:, None]], dim=1)


@torch.inference_mode()
def generate(
    model: GPT,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> list[list[int]]:
    """New token ids per row for prompts (B, T) of equal length.

    A row stops at ``eos_id`` (not included in its output); decoding ends when every row
    has stopped or ``max_new_tokens`` were produced. ``on_step`` sees each step's ids (B,).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        dec = Decoder(model, prompt_ids.to(device), use_cache)
        done = torch.zeros(prompt_ids.size(0), dtype=torch.bool, device=device)
        out: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            nxt = sample_next(dec.logits(), temperature, top_k, top_p, generator)
            if eos_id is not None:
                nxt = nxt.masked_fill(done, eos_id)
                done |= nxt == eos_id
            out.append(nxt)
            if on_step is not None:
                on_step(nxt)
            if bool(done.all()):
                break
            dec.append(nxt)
    finally:
        model.train(was_training)
    if not out:
        return [[] for _ in range(prompt_ids.size(0))]
    rows = torch.stack(out, dim=1).tolist()
    if eos_id is not None:
        rows = [r[: r.index(eos_id)] if eos_id in r else r for r in rows]
    return rows
