"""``optim=muon`` (conf/optim/muon.yaml): Muon for the blocks' hidden matrices, AdamW for the rest.

Muon (Keller Jordan; ``torch.optim.Muon``) orthogonalizes each 2-D update with a Newton-Schulz
iteration, which suits the square-ish weights inside the blocks (attention QKV and output, the
feed-forward's two matrices) and not the embeddings, the head, the gains or the biases, which keep
AdamW with its lr, betas and decay rule (GPT.param_groups). The two run as one optimizer
(``MuonAdamW``): one state dict in the checkpoint, one LR scheduler scaling both groups' rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from article_gpt.model.gpt import GPT
from article_gpt.training.module import OptimConfig


def muon_split(model: GPT) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's, AdamW's) trainable parameters: Muon takes the 2-D weights inside the blocks, AdamW
    everything else (token and position embeddings, the head, LayerNorm gains, biases)."""
    hidden = {id(p) for p in model.blocks.parameters() if p.dim() == 2}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in hidden], [p for p in params if id(p) not in hidden]


class MuonAdamW(torch.optim.Optimizer):
    """A Muon and an AdamW over disjoint parameters, seen as one optimizer: ``param_groups`` is
    AdamW's groups then Muon's (so group 0's lr is ``optim.lr``), and the two share one ``state``,
    so ``state_dict``/``load_state_dict`` are torch's own over all of them."""

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon) -> None:
        self.adamw, self.muon = adamw, muon
        super().__init__([*adamw.param_groups, *muon.param_groups], {})
        self._link()

    def _link(self) -> None:
        """Point both inner optimizers at this one's groups and state (torch's load_state_dict
        replaces both objects)."""
        n = len(self.adamw.param_groups)
        self.adamw.param_groups, self.muon.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.adamw.state = self.muon.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._link()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        self.muon.step()
        return loss


@dataclass
class MuonConfig(OptimConfig):
    """``optim=muon``: Muon for the blocks' 2-D weights at ``muon_lr``, AdamW (``lr``, ``betas``) for
    the embeddings, head, gains and biases; ``weight_decay`` on both's matrices; the schedule of
    OptimConfig scales both rates alike."""

    muon_lr: float = 0.02
    """Muon's peak learning rate (Keller Jordan's default; torch's "original" shape adjustment)."""
    muon_momentum: float = 0.95
    """Muon's (Nesterov) momentum, in [0, 1)."""

    def build(self, model: GPT, device: torch.device) -> torch.optim.Optimizer:
        hidden, rest = muon_split(model)
        matrices = [p for p in rest if p.dim() >= 2]
        others = [p for p in rest if p.dim() < 2]
        adamw = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": self.weight_decay}, {"params": others, "weight_decay": 0.0}],
            lr=self.lr, betas=self.betas, fused=device.type in ("cpu", "cuda") or None)
        muon = torch.optim.Muon(hidden, lr=self.muon_lr, momentum=self.muon_momentum, weight_decay=self.weight_decay)
        return MuonAdamW(adamw, muon)
