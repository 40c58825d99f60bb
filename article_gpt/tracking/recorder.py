"""What a run leaves on disk: metrics.json, loss.png and samples.txt.

``RunRecorder`` keeps the loss history itself (independent of any logger, so the files exist
with ``logger=none``) and times only the training batches, so tokens/s is not diluted by
validation, sampling or start-up.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import lightning as L

from article_gpt.errors import ConfigError


class NonFiniteLossError(FloatingPointError):
    pass


def finished_run_refusal(run_dir: Path) -> ConfigError | None:
    """The error to stop with when ``run_dir`` already holds a finished run (metrics.json says
    completed or pruned, or cannot be read). Interrupted and failed runs are resumed or run
    again in place (the rule in article_gpt/recovery/resume.py)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return None
    try:
        status = json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status in ("interrupted", "failed"):
        return None
    return ConfigError(f"{run_dir}: already holds a finished run; refusing to overwrite it")


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


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def plot_losses(path: Path, recorder: RunRecorder, title: str) -> None:
    """Train and val loss against step: the original Article GPT's loss picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    if recorder.train_curve:
        ax.plot(*zip(*recorder.train_curve), label="train/loss", lw=1.2)
    if recorder.val_curve:
        ax.plot(*zip(*recorder.val_curve), "o-", label="val/loss", lw=1.5, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_samples(path: Path, samples: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(f"=== epoch {s['epoch']} (step {s['step']}) ===\n{s['text']}\n\n")
