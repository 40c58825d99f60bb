"""How checkpoints are written and read, and what they carry beyond Lightning's own state.

``AtomicCheckpointIO``: a checkpoint is written to a temporary name in its own folder, flushed
to disk, then renamed over the old one, so a full disk or a kill mid-write leaves the previous
checkpoint (or none), never a truncated file. (Lightning's default writes through fsspec's
local transaction, whose temporary file lives in /tmp: the final move across filesystems is a
copy, which a full disk can cut short.) Reading is always ``weights_only=True``: a checkpoint
can hold tensors and plain containers, never code.

``ResumeState``: what an exact resume needs that Lightning does not save: torch's (and numpy's
and Python's) global RNG states, how far into the epoch the data order got, and the samples
generated so far. With these a resumed CPU run repeats the uninterrupted one bit for bit. It
also hands early stopping's state on to the resumed fit (see :func:`_continue_early_stopping`).
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from article_gpt.errors import CheckpointError, describe

STATE_KEY = "article_gpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        buffer = io.BytesIO()  # serialized first: a failed write then raises the OS's own error
        torch.save(checkpoint, buffer)
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on one filesystem: readers see the old file or the new one
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_resumable(Path(path), map_location)


def load_resumable(path: Path, map_location: Any | None = None) -> dict:
    """A training checkpoint, read with ``weights_only=True``; one clear line if it cannot be."""
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:
        if "Weights only load failed" in str(err):
            raise CheckpointError(f"{path}: holds pickled Python objects that weights_only=True refuses to load; "
                                  "not a checkpoint this project wrote") from None
        raise CheckpointError(f"{path}: corrupted or not a torch checkpoint ({describe(err, 160)})") from None


def _rng_states() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _continue_early_stopping(trainer, checkpoint: dict) -> None:
    """Early stopping's state as the resumed fit starts: its best score and its count of
    validations without improvement carry over, with this run's configured ``patience`` (a
    resume may raise it: ``callbacks.early_stopping.patience``, recovery/argv.py) and no stop
    yet, so the record tells whether this fit stopped early. Called before Lightning loads each
    callback's state, which would otherwise put back the checkpoint's patience."""
    states = checkpoint.get("callbacks") or {}
    for cb in trainer.callbacks:
        state = states.get(cb.state_key) if isinstance(cb, EarlyStopping) else None
        if state:
            state.update(patience=cb.patience, stopped_epoch=0, stopping_reason_message=None,
                         stopping_reason=EarlyStoppingReason.NOT_STOPPED.value)


class ResumeState(L.Callback):
    """Saves and restores the RNG states, the data position and the samples (see the module doc)."""

    def __init__(self) -> None:
        self.resumed_from_step: int | None = None
        self._rng: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # this epoch's trained batches
        epoch, total = trainer.current_epoch, trainer.num_training_batches
        if done >= total:  # the epoch is over: the next run starts the next one
            epoch, done = epoch + 1, 0
        checkpoint[STATE_KEY] = {
            "rng": _rng_states(),
            "data": {"epoch": epoch, "batches_done": done,
                     "batches_total": total if total != float("inf") else None},
            "samples": list(getattr(pl_module, "samples", [])),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.resumed_from_step = int(checkpoint.get("global_step", 0))
        _continue_early_stopping(trainer, checkpoint)
        state = checkpoint.get(STATE_KEY)
        if not state:
            return
        self._rng = state["rng"]
        pl_module.samples[:] = state["samples"]
        order = getattr(trainer.datamodule, "train_order", None)
        if order is not None:
            data = state["data"]
            # every rank trains its own batches of the same global order, one after the other
            per_batch = trainer.datamodule.loader.batch_size * trainer.world_size
            stop = data["batches_total"] * per_batch if data["batches_total"] is not None else None
            # under DDP (even of one rank) Lightning's distributed sampler reads the order by position
            distributed = trainer.distributed_sampler_kwargs is not None
            order().resume_at(data["epoch"], data["batches_done"] * per_batch, stop, keep_length=distributed)

    def on_train_start(self, trainer, pl_module) -> None:
        # after setup and the restore: nothing that draws random numbers runs between here and
        # the first resumed step, exactly as between the checkpoint and the next step originally
        if self._rng is not None:
            _set_rng_states(self._rng)
            self._rng = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # Lightning calls set_epoch on the loader's sampler, which under DDP is its own wrapper
        # around this order: tell the order itself, so every epoch draws a new one there too
        order = getattr(trainer.datamodule, "train_order", None)
        if order is not None:
            order().set_epoch(trainer.current_epoch)
