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

from article_gpt.model import accounting
from article_gpt.model.loss import linear_cross_entropy, soft_cap
from article_gpt.model.rotary import apply_rotary, rotary_tables

Rotary = tuple[torch.Tensor, torch.Tensor] | None  # cos and sin at the positions of x, or None (learned)


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
    position: str = "learned"
    """Where positions come from: learned (a table of block_size embeddings added to the tokens, GPT-2's)
    or rope (rotary embeddings rotating each head's queries and keys, article_gpt/model/rotary.py; no
    table, so an even head_size)."""
    qk_norm: bool = False
    """RMS-normalize each head's queries and keys (no parameters) before their dot product."""
    mlp_activation: str = "gelu"
    """The feed-forward's activation: gelu (with gelu_approximate) or relu2 (ReLU squared, the speedrun's)."""
    zero_init_proj: bool = False
    """Initialize the attention and feed-forward output projections to zero (each block starts as the
    identity), instead of GPT-2's normal(0, 0.02 / sqrt(2 * num_layers))."""
    logit_softcap: float | None = None
    """None, or c > 0: the logits become c * tanh(logits / c), bounded in (-c, c) (Gemma 2's, the speedrun's 30)."""

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
        self.qk_norm = cfg.qk_norm

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, rotary: Rotary = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.heads * self.head_size, dim=2)
        # (B, T, heads*hs) -> (B, heads, T, hs)
        q, k, v = (t.view(B, T, self.heads, self.head_size).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_size,)), F.rms_norm(k, (self.head_size,))
        if rotary is not None:  # before the cache: cached keys keep the rotation of their own position
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
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
        self.gelu_approximate, self.relu2 = cfg.gelu_approximate, cfg.mlp_activation == "relu2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = F.relu(h).square() if self.relu2 else F.gelu(h, approximate=self.gelu_approximate)
        return self.dropout(self.proj(h))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embedding_dim, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embedding_dim, bias=cfg.bias)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, rotary: Rotary = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, rotary)
        return x + self.ffn(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.embedding_dim)
        if cfg.position == "rope":  # buffers outside the state dict: a checkpoint holds no table
            cos, sin = rotary_tables(cfg.block_size, cfg.head_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
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
            if name.endswith("proj.weight") and cfg.zero_init_proj:
                nn.init.zeros_(p)
            elif name.endswith("proj.weight"):
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
        rotary = None
        if self.cfg.position == "rope":
            x, rotary = self.tok_emb(idx), (self.rope_cos[pos], self.rope_sin[pos])
        else:
            x = self.tok_emb(idx) + self.pos_emb(pos)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches else None, rotary)
        return self.ln_f(x)

    def cap_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``logit_softcap`` applied to the head's output (unchanged without one)."""
        return soft_cap(logits, self.cfg.logit_softcap)

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
            return self.cap_logits(self.lm_head(x[:, -1:, :])), None
        flat_x, flat_t = x.reshape(-1, x.size(-1)), targets.reshape(-1)
        if self.cfg.loss_chunk_size > 0:
            w, b = self.lm_head.weight, self.lm_head.bias
            return None, linear_cross_entropy(flat_x, w, b, flat_t, self.cfg.loss_chunk_size,
                                              softcap=self.cfg.logit_softcap)
        logits = self.cap_logits(self.lm_head(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), flat_t)
        return logits, loss

    def new_caches(self, batch: int, device=None, dtype=None) -> list[KVCache]:
        p = self.tok_emb.weight  # always a plain tensor of the model's dtype (a quantized head need not be)
        return [KVCache(batch, self.cfg, device or p.device, dtype or p.dtype) for _ in self.blocks]

    # ---- accounting -------------------------------------------------------------------
    def num_params(self) -> dict[str, int]:
        """Total parameters, those outside the token/position embeddings (Kaplan et al.) and those
        in a matmul per token: the arithmetic of model/accounting.py, which the sweep plan shares."""
        return accounting.param_counts(**self.cfg.to_dict())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (model/accounting.py): 6N plus attention, at ``seq_len`` (block_size)."""
        return accounting.flops_per_token(self.num_params()["params_matmul"], self.cfg.num_layers,
                                          self.cfg.attn_dim, seq_len or self.cfg.block_size)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay matrices and embeddings (>= 2-D), never biases or LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
