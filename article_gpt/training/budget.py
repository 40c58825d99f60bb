"""Compute budgets: stop a run after N training tokens or N training FLOPs, with the LR schedule
spanning exactly that budget; and, for every run, the tokens it trained on and their FLOPs.

Sweeping ``block_size`` or ``embedding_dim`` for a fixed number of epochs compares runs that saw
different amounts of text and compute. ``budget.tokens`` / ``budget.flops`` make them equal.

How: the budget becomes Lightning's ``max_steps`` (and ``max_epochs`` is lifted, so epochs never
cut it short) before the optimizer and its schedule are built. The schedule in module.py spans
``trainer.estimated_stepping_batches``, which is then exactly that step count, so warmup and
cosine decay fit the budget and the LR reaches its floor as the budget is spent. The step count
is not a plain ``ceil(budget / tokens per step)``: an epoch's last batch is short (unless
``drop_last``), so the steps are counted on the real batches an epoch yields (per rank under DDP,
after ``limit_train_batches`` and gradient accumulation), and the run ends on the first
optimizer step at which the budget is reached: at most one step's tokens past it. FLOPs are
tokens times the model's own ``flops_per_token()``; a FLOPs budget is the token budget
``flops / flops_per_token``. With both set, the tighter one wins.

A run stopped by a budget ends with a validation at its last step (Lightning validates when
asked to stop), so its best val loss is measured at the budget, not at the last epoch boundary.
"""

from __future__ import annotations

import lightning as L

from article_gpt.errors import ConfigError

# the arithmetic lives with the model's counts, torch-free, for the sweep plan too (sweeps/plan.py)
from article_gpt.model.accounting import budget_tokens, epoch_step_tokens, steps_for_budget


class ComputeBudget(L.Callback):
    """Counts the training tokens (every rank's) and FLOPs of a run; with a budget, sets the
    Trainer's step limit to it and stops there.

    The counts go into the checkpoint (``state_dict``), so a resumed run keeps counting.
    """

    def __init__(self, tokens: float | None = None, flops: float | None = None, flops_per_token: int = 0) -> None:
        self.flops_per_token = flops_per_token
        self.budget = budget_tokens(tokens, flops, flops_per_token) if flops_per_token else tokens
        self.max_steps: int | None = None  # the budget in optimizer steps, once the data is known
        self.tokens_seen = 0

    @property
    def train_flops(self) -> int:
        return self.tokens_seen * self.flops_per_token

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning calls this after the datamodule's setup and before configure_optimizers, on
        # every rank: the right moment to turn the budget into the step limit that the LR
        # schedule then spans (Lightning's own tuner and fast_dev_run set these loop limits too).
        if self.budget is None or stage != "fit":
            return
        loader = trainer.datamodule.train_dataloader() if trainer.datamodule else pl_module.train_dataloader()
        try:  # windows per epoch: the sampler's length (random windows draw their own count)
            windows, window_tokens = len(loader.sampler), loader.dataset[0][0].numel()
        except (TypeError, AttributeError, IndexError) as err:
            raise ConfigError("budget: needs training data of known length (a map-style dataset "
                              f"of (x, y) windows); this one has none ({type(err).__name__})") from err
        per_step = epoch_step_tokens(windows, loader.batch_size, window_tokens, trainer.world_size,
                                     bool(loader.drop_last), trainer.limit_train_batches,
                                     trainer.accumulate_grad_batches)
        self.max_steps, _ = steps_for_budget(self.budget, per_step)
        trainer.fit_loop.epoch_loop.max_steps = self.max_steps
        trainer.fit_loop.max_epochs = -1  # epochs must not end the run before its budget

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.tokens_seen += batch[0].numel() * trainer.world_size  # every rank reads a batch this size
        step = trainer.global_step
        if step == 1 or step % max(1, trainer.log_every_n_steps) == 0:
            # float: loggers and W&B plot val loss against tokens or FLOPs with these as x-axis
            pl_module.log("train/tokens_seen", float(self.tokens_seen), on_step=True, on_epoch=False)
            pl_module.log("train/flops", float(self.train_flops), on_step=True, on_epoch=False)
        if self.max_steps is not None and step >= self.max_steps:
            # stopping (not only hitting max_steps) makes Lightning validate at this last step
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for lg in trainer.loggers:  # W&B config, CSV/TensorBoard hparams: comparable across runs
            lg.log_hyperparams(self.record())

    def record(self) -> dict:
        """What metrics.json, W&B and the sweep summary report."""
        return {"tokens_seen": self.tokens_seen, "train_flops": self.train_flops, "budget_steps": self.max_steps}

    def state_dict(self) -> dict:
        return {"tokens_seen": self.tokens_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tokens_seen = int(state_dict.get("tokens_seen", 0))


def budget_record(trainer: L.Trainer | None) -> dict:
    """The run's tokens seen, training FLOPs and budget steps, read off its ComputeBudget callback."""
    for cb in getattr(trainer, "callbacks", None) or []:
        if isinstance(cb, ComputeBudget):
            return cb.record()
    return {}
