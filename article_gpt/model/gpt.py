"""A decoder-only transformer in pure torch (no Lightning, no config objects).

Semantics follow the original Article GPT, with its bugs fixed:
- the blocks are chained (each block reads the previous block's output);
- attention is causal over the key axis (``scaled_dot_product_attention(is_causal=True)``),
  so position t never sees t+1..;
- ``heads * head_size`` is projected back to ``embedding_dim``, so head_size is a free choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from article_gpt.model.loss import linear_cross_entropy


@dataclass
class GPTConfig:
    """The model's shape and settings: the ``model`` section of the config.

    The one place of the defaults: conf/model/default.yaml lists them for Hydra under every preset
    (so each key is settable without ``+``), and each conf/model/<preset>.yaml sets only what differs
    from them, so GPTConfig(**preset file) is the preset as train.py composes it (tests/test_presets.py
    checks both). They are those of a GPT built in Python: deterministic (no dropout) and returning
    its logits (no fused loss); each preset sets its training choices (the fused loss, dropout).
    """

    vocab_size: int = 50257
    """Token ids the embedding and the output head cover: GPT-2's BPE (at least the tokenizer's)."""
    block_size: int = 64
    """Context length in tokens, also the number of learned positions."""
    embedding_dim: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads per block."""
    head_size: int = 32
    """Width of one head, independent of embedding_dim: the attention width is heads * head_size."""
    dropout: float = 0.0
    """Dropout on the embeddings, attention weights and residual branches while training, in [0, 1)
    (0.1 in tiny, small, medium, seed and gpt2_pretrained)."""
    bias: bool = True
    """Biases in the Linear layers and LayerNorms."""
    tie_weights: bool = True
    """Share the token embedding with the output head (then without a bias, as GPT-2)."""
    loss_chunk_size: int = 0
    """0: plain logits and cross-entropy, ``forward(idx, targets)`` returns the logits; > 0: the loss is
    fused with the output head over vocabulary chunks of this size, never materializing the
    (tokens x vocab) logits (article_gpt/model/loss.py): 1024 in every preset, 1.8x faster steps
    than plain logits on a 2-core CPU."""
    gelu_approximate: str = "none"
    """The GELU: none (the exact erf one) or tanh (the approximation GPT-2 was trained with, "gelu_new")."""

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_size

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Preallocated keys and values for one attention layer: (batch, heads, block_size, head_size).

    ``pos`` is the number of positions already written; the model appends at ``pos``.
    """

    def __init__(self, batch: int, cfg: GPTConfig, device, dtype) -> None:
        shape = (batch, cfg.heads, cfg.block_size, cfg.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.size(2)
        self.k[:, :, self.pos : end] = k
        self.v[:, :, self.pos : end] = v
        self.pos = end
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads, self.head_size = cfg.heads, cfg.head_size
        self.qkv = nn.Linear(cfg.embedding_dim, 3 * cfg.attn_dim, bias=cfg.bias)  # fused Q, K, V
        self.proj = nn.Linear(cfg.attn_dim, cfg.embedding_dim, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.heads * self.head_size, dim=2)
        # (B, T, heads*hs) -> (B, heads, T, hs)
        q, k, v = (t.view(B, T, self.heads, self.head_size).transpose(1, 2) for t in (q, k, v))
        # A cache that already holds earlier positions turns the mask into "all of the past
        # plus the causal part of the new chunk"; new chunks after a prefill are one token,
        # for which attending to every cached key is exactly causal.
        # Decided by T, not by cache.pos: under torch.compile(dynamic=True) the position is symbolic,
        # and a mask flag computed from it broke the graph at every decode step.
        causal = cache is None or T > 1
        if cache is not None:
            if T > 1 and cache.pos != 0:
                raise ValueError("after the prefill, the KV cache takes one token at a time")
            k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, self.heads * self.head_size)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.embedding_dim, 4 * cfg.embedding_dim, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.embedding_dim, cfg.embedding_dim, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.gelu_approximate = cfg.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.gelu_approximate)))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embedding_dim, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embedding_dim, bias=cfg.bias)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.ffn(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.embedding_dim)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.embedding_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.embedding_dim, bias=cfg.bias)
        # An untied head keeps its bias (the original's lm_head had one); a tied head
        # shares the embedding matrix and, like GPT-2, has none.
        self.lm_head = nn.Linear(cfg.embedding_dim, cfg.vocab_size, bias=cfg.bias and not cfg.tie_weights)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * layers) so the residual stream's
        # variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def hidden(self, idx: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Final-LayerNorm hidden states (B, T, embedding_dim) for token ids ``idx`` (B, T)."""
        T = idx.size(1)
        start = caches[0].pos if caches else 0
        if start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size={self.cfg.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches else None)
        return self.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and the mean cross-entropy against ``targets``.

        Without targets only the last position's logits are computed (B, 1, vocab): that is
        all sampling needs, and it skips (T-1)/T of the head, the dominant cost at small widths.
        With targets and ``loss_chunk_size > 0`` the loss is fused with the head and the
        logits are never built: the first element is then None.
        """
        x = self.hidden(idx, caches)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None
        flat_x, flat_t = x.reshape(-1, x.size(-1)), targets.reshape(-1)
        if self.cfg.loss_chunk_size > 0:
            w, b = self.lm_head.weight, self.lm_head.bias
            return None, linear_cross_entropy(flat_x, w, b, flat_t, self.cfg.loss_chunk_size)
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), flat_t)
        return logits, loss

    def new_caches(self, batch: int, device=None, dtype=None) -> list[KVCache]:
        p = self.tok_emb.weight  # always a plain tensor of the model's dtype (a quantized head need not be)
        return [KVCache(batch, self.cfg, device or p.device, dtype or p.dtype) for _ in self.blocks]

    # ---- accounting -------------------------------------------------------------------
    def num_params(self) -> dict[str, int]:
        """Total parameters, and those outside the token/position embeddings (Kaplan et al.)."""
        total = sum(p.numel() for p in self.parameters())  # a tied weight is counted once
        embeddings = self.tok_emb.weight.numel() + self.pos_emb.weight.numel()
        head_weight = 0 if self.cfg.tie_weights else self.lm_head.weight.numel()
        return {
            "params_total": total,
            "params_non_embedding": total - embeddings,
            # Parameters that take part in a matmul per token: every weight but the position
            # table, the token table counted once as the (tied) head, or the head if untied.
            "params_matmul": total - self.pos_emb.weight.numel() - (self.tok_emb.weight.numel() if head_weight else 0),
        }

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6N for the matmul weights (forward + backward) plus
        12 * layers * attn_dim * T for attention scores and their weighted sum (PaLM, App. B)."""
        T = seq_len or self.cfg.block_size
        n = self.num_params()["params_matmul"]
        return 6 * n + 12 * self.cfg.num_layers * self.cfg.attn_dim * T

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay matrices and embeddings (>= 2-D), never biases or LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
