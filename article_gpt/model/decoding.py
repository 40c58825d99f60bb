"""The one inference engine: KV-cached decoding with temperature, top-k and top-p sampling.

Used by ``generate.py`` (the CLI) and by the training-time samples.

Decoding with the cache: the prompt is run once (prefill), then each step feeds one token.
Positions are learned and absolute, so once the sequence outgrows ``block_size`` the window
slides and every position shifts: cached keys are then stale, and each further step recomputes
the last ``block_size`` tokens, exactly as uncached decoding does. Cached and uncached decoding
therefore give the same logits at every step.

Prompts of different token lengths are decoded in groups of equal length (``generate_many``)
rather than left-padded: the model takes one shared position range and a plain causal mask,
so padding would need per-row positions and key masks that it does not have.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

import tiktoken
import torch
import torch.nn as nn

from article_gpt.model.gpt import GPT

# A nucleus whose float mass lands this close below top_p counts as reaching it: softmax in
# float32 is off by ~1e-7, which would otherwise add a token to a nucleus of mass exactly top_p.
NUCLEUS_TOLERANCE = 1e-6

StepFn = Callable[..., torch.Tensor]  # (ids, caches) -> hidden states, as GPT.hidden


def nucleus_mask(sorted_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which of the descending-sorted logits (B, K) lie in the nucleus of mass ``top_p``.

    The nucleus is the smallest set of most likely tokens whose probabilities sum to at
    least ``top_p``: a token is needed while the mass of the tokens before it is below top_p.
    """
    probs = sorted_logits.double().softmax(dim=-1)
    before = probs.cumsum(dim=-1).roll(1, dims=-1)
    before[..., 0] = 0.0  # exclusive cumsum without subtracting, which would add rounding error
    keep = before < top_p - NUCLEUS_TOLERANCE
    keep[..., 0] = True  # the most likely token always stays
    return keep


def _survivors(
    logits: torch.Tensor, top_k: int | None, top_p: float | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The top-k/top-p survivors of (B, V) logits as descending values (-inf where cut) and
    their token ids, both (B, K); None when neither filter removes anything."""
    vocab = logits.size(-1)
    use_k = top_k is not None and top_k < vocab
    use_p = top_p is not None and top_p < 1.0
    if not (use_k or use_p):
        return None
    # Either way the survivors are a sorted prefix: topk is much cheaper than a full sort.
    vals, idx = torch.topk(logits, top_k, dim=-1) if use_k else torch.sort(logits, dim=-1, descending=True)
    if use_p:
        vals = vals.masked_fill(~nucleus_mask(vals, top_p), float("-inf"))
    return vals, idx


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass ``top_p``.

    Works row-wise on (B, V). With both, the nucleus is taken within the top-k (renormalized).
    Exactly ``top_k`` tokens survive the top-k step; ties at the k-th logit are broken by topk.
    """
    kept = _survivors(logits, top_k, top_p)
    if kept is None:
        return logits
    vals, idx = kept
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, vals)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V); temperature 0 is greedy.

    Draws from the distribution ``filter_logits`` leaves, but among the K survivors only:
    a multinomial over the full vocabulary costs more than a small model's forward pass.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    kept = _survivors(logits, top_k, top_p)
    if kept is None:
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)
    vals, idx = kept
    choice = torch.multinomial(vals.softmax(dim=-1), 1, generator=generator)
    return idx.gather(-1, choice).squeeze(-1)


def compile_step(model: GPT, backend: str | Callable = "inductor") -> StepFn:
    """``model.hidden`` compiled for the one-token cached steps. ``dynamic=True``: the cache length
    grows each step, so its position is a symbolic int and one graph serves every step (no
    recompile per token; tests/test_generate.py counts the graphs)."""
    return torch.compile(model.hidden, dynamic=True, backend=backend)


class Decoder:
    """Step-by-step next-token logits for a batch of equal-length prompts.

    ``step_fn`` (e.g. a ``torch.compile``d ``model.hidden``) replaces ``model.hidden`` for the
    one-token cached steps only, the part that repeats; prefill and window recomputes stay eager.
    """

    def __init__(self, model: GPT, tokens: torch.Tensor, use_cache: bool = True, step_fn: StepFn | None = None):
        self.model, self.tokens, self.use_cache = model, tokens, use_cache
        self.step_fn = step_fn or model.hidden
        self.block_size = model.cfg.block_size
        self.caches = None
        # The output projection as (embedding_dim, vocab). At one row per step it is a
        # matrix-vector product that reads the whole matrix, the largest one in a small GPT;
        # on CPU, this layout streams about twice as fast as nn.Linear's (vocab, embedding_dim).
        # A fresh copy per decoder, so weights that train on between samples are never stale.
        # A head of another kind (int8 weights: model/quantize.py) is called as it is.
        head = model.lm_head
        self.head_t = head.weight.detach().t().contiguous() if isinstance(head, nn.Linear) else None

    def logits(self) -> torch.Tensor:
        """Logits (B, V) for the token after ``self.tokens``."""
        T = self.tokens.size(1)
        if self.use_cache and self.caches is not None and self.caches[0].pos == T - 1 and T <= self.block_size:
            h = self.step_fn(self.tokens[:, -1:], self.caches)  # one new token
        elif self.use_cache and T < self.block_size:
            self.caches = self.model.new_caches(self.tokens.size(0))  # (re)fill from position 0
            h = self.model.hidden(self.tokens, self.caches)
        else:
            self.caches = None  # window full or sliding: positions shift, recompute the window
            h = self.model.hidden(self.tokens[:, -self.block_size :])
        if self.head_t is None:
            return self.model.cap_logits(self.model.lm_head(h[:, -1, :]))
        out = h[:, -1, :] @ self.head_t
        bias = self.model.lm_head.bias
        return self.model.cap_logits(out if bias is None else out + bias)

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
    step_fn: StepFn | None = None,
) -> list[list[int]]:
    """New token ids per row for prompts (B, T) of equal length.

    A row stops at ``eos_id`` (not included in its output); decoding ends when every row
    has stopped or ``max_new_tokens`` were produced. ``on_step`` sees each step's ids (B,).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        dec = Decoder(model, prompt_ids.to(device), use_cache, step_fn)
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


def generate_many(model: GPT, prompts: list[list[int]], max_new_tokens: int, **kwargs) -> list[list[int]]:
    """``generate`` for prompts of any lengths, in their order: equal lengths share a batch.

    Each prompt needs at least one token. ``kwargs`` go to ``generate``; with a seeded
    generator the groups draw from it in order of first appearance, so results are repeatable.
    """
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token (an empty one can start from <|endoftext|>)")
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    device = next(model.parameters()).device
    for rows in groups.values():
        batch = torch.tensor([prompts[i] for i in rows], device=device)
        for i, ids in zip(rows, generate(model, batch, max_new_tokens, **kwargs)):
            out[i] = ids
    return out


class TextStream:
    """Text of a growing token sequence, released only once it cannot change.

    A GPT-2 token is a byte string and may end inside a multi-byte UTF-8 character; the
    incremental decoder holds such a tail back until the next token completes it. The pieces
    joined, plus ``flush()``, equal ``enc.decode(ids)`` (both replace invalid bytes).
    """

    def __init__(self, enc: tiktoken.Encoding) -> None:
        self._enc = enc
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._enc.decode_single_token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def generate_streamed(
    model: GPT, enc: tiktoken.Encoding, prompt_ids: list[int], max_new_tokens: int,
    write: Callable[[str], None], **kwargs,
) -> list[int]:
    """``generate`` for one prompt, handing each piece of stable continuation text to ``write``."""
    stream, eos_id = TextStream(enc), kwargs.get("eos_id")

    def show(step_ids: torch.Tensor) -> None:
        token = int(step_ids[0])
        if token != eos_id:
            write(stream.push(token))

    batch = torch.tensor([prompt_ids], device=next(model.parameters()).device)
    new = generate(model, batch, max_new_tokens, on_step=show, **kwargs)[0]
    write(stream.flush())
    return new
