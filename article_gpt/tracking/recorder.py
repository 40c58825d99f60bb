"""What a run measures as it trains, and samples.txt (loss.png is drawn in tracking/report.py).

``RunRecorder`` keeps the loss history itself (independent of any logger, so the files exist
with ``logger=none``) and times only the training batches, so tokens/s is not diluted by
validation, sampling or start-up.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import lightning as L

MAX_EXP = math.log(sys.float_info.max)  # 709.78: math.exp of more raises OverflowError


class NonFiniteLossError(FloatingPointError):
    pass


class RunRecorder(L.Callback):
    def __init__(self) -> None:
        self.train_curve: list[tuple[int, float]] = []  # (step, loss), every log_every_n_steps
        self.val_curve: list[tuple[int, float]] = []  # (step, loss), every validation
        self.train_tokens = 0
        self.train_seconds = 0.0
        self.first_step_wall: float | None = None  # time.time() when the first step finished
        self.initial_val: float | None = None  # val loss before any step (full sanity check)
        self._batch_t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self._batch_t0
        self.train_tokens += batch[0].numel() * trainer.world_size  # DDP: every rank read a batch this size
        if self.first_step_wall is None:
            self.first_step_wall = time.time()
        step = trainer.global_step
        if step == 1 or step % max(1, trainer.log_every_n_steps) == 0:
            loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)  # syncs, rarely
            if not math.isfinite(loss):
                last = (f"; the last finite loss was {self.train_curve[-1][1]:.4f} at step {self.train_curve[-1][0]}"
                        if self.train_curve else "")
                raise NonFiniteLossError(f"train/loss is {loss} at step {step}{last}; lower optim.lr or check the data")
            self.train_curve.append((step, loss))
            # training-batch time only, the same figure as metrics.json's tokens_per_sec
            pl_module.log("train/tokens_per_sec", self.tokens_per_sec or 0.0, on_step=True, on_epoch=False)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if loss is None:
            return
        if not trainer.sanity_checking:
            self.val_curve.append((trainer.global_step, float(loss)))
        elif math.isinf(trainer.num_sanity_val_steps):
            # num_sanity_val_steps=-1: the sanity check reads what every validation reads,
            # so it is a fair "before training" point of the curve
            self.initial_val = float(loss)
            self.val_curve.append((0, self.initial_val))

    def state_dict(self) -> dict:
        # in every checkpoint, so a resumed run's metrics.json and loss.png hold the whole run
        return {"train_curve": self.train_curve, "val_curve": self.val_curve, "train_tokens": self.train_tokens,
                "train_seconds": self.train_seconds, "initial_val": self.initial_val}

    def load_state_dict(self, state: dict) -> None:
        self.train_curve = [tuple(p) for p in state["train_curve"]]
        self.val_curve = [tuple(p) for p in state["val_curve"]]
        self.train_tokens, self.train_seconds = state["train_tokens"], state["train_seconds"]
        self.initial_val = state["initial_val"]

    @property
    def tokens_per_sec(self) -> float | None:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else None

    @property
    def best_val(self) -> float | None:
        """Best validation after training began: the step-0 point has no checkpoint behind it."""
        trained = self.val_curve[1:] if self.initial_val is not None else self.val_curve
        finite = [v for _, v in trained if math.isfinite(v)]
        return min(finite) if finite else None

    def record(self, t_start: float) -> dict:
        """The run record's fields this callback owns; ``t_start``: when the job started."""
        first, started = self.first_step_wall, process_started_at()
        return {
            "val_loss": self.best_val,
            "val_ppl": perplexity(self.best_val),
            "val_loss_initial": self.initial_val,
            "train_loss": self.train_curve[-1][1] if self.train_curve else None,
            "tokens_per_sec": self.tokens_per_sec,
            "first_step_s": round(first - t_start, 3) if first else None,
            # from the process's own start: imports, config, data, model and sanity check count
            "start_to_first_step_s": round(first - started, 3) if first and started else None,
            # (step, loss) of every validation: sweep comparisons read curves from disk, any launcher
            "val_curve": [[step, loss] for step, loss in self.val_curve],
        }


def perplexity(loss: float | None) -> float | None:
    """exp(loss), or None where there is none to give: no loss, a non-finite one, or a diverged run's
    loss above ~709, whose exp overflows a float (math.exp would raise in the closing path)."""
    if loss is None or not math.isfinite(loss) or loss > MAX_EXP:
        return None
    return math.exp(loss)


def process_started_at() -> float | None:
    """Wall-clock time this process started (Linux: /proc), else None. Python's own start-up and
    every import count, as they do for a user waiting on the first step."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def write_samples(path: Path, samples: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(f"=== epoch {s['epoch']} (step {s['step']}) ===\n{s['text']}\n\n")
