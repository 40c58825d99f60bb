"""Ctrl-C, SIGTERM and SIGUSR1/SIGUSR2 (what schedulers send before they preempt): stop cleanly.

The first signal is only noted. Training stops at the end of the step in progress: every
process agrees on that step (under DDP one rank's signal stops all ranks at the same step, so
none is left waiting in a collective), rank 0 writes ``checkpoints/last.ckpt`` holding that
step (resumable mid-epoch, article_gpt/recovery/checkpoint_io.py), and the run's usual closing
path writes ``metrics.json`` with ``status: interrupted`` and finishes the W&B run. The process
then exits with the conventional code, 128 + the signal number (130 for Ctrl-C, 143 for
SIGTERM). A second signal stops at once, a third ends the process without any cleanup.

Before training starts (data, model, W&B start-up) nothing is worth saving: a signal stops
the run at once. If the process had a handler of its own for the signal (submitit's
preemption handler, which requeues the job), it is called once the run is closed.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

HANDLED = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None),
                            getattr(signal, "SIGUSR2", None)) if s is not None)


class Interrupted(BaseException):
    """A signal stopped the run (a BaseException, like KeyboardInterrupt: not a failure)."""

    def __init__(self, signum: int, step: int | None = None) -> None:
        self.signum, self.step = signum, step
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"{signal.Signals(signum).name} received{at}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.deferred = False  # True while training: the stop waits for the end of the step
        self.previous: dict[int, Any] = {}


_state = _State()


def received() -> int | None:
    """The first signal received since :func:`install`, if any."""
    return _state.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    _state.count += 1
    _state.signum = _state.signum or signum
    if _state.count >= 3:
        os._exit(128 + signum)  # the user insists: no cleanup at all
    if _state.count == 2 or not _state.deferred:
        raise Interrupted(signum)
    print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the end of this step "
          f"(send it again to stop at once)", file=sys.stderr, flush=True)


def _set_handlers() -> None:
    for s in HANDLED:
        current = signal.getsignal(s)
        if current is not _handler:
            _state.previous.setdefault(s, current)
            signal.signal(s, _handler)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Our handler for the run's lifetime (main thread only); the previous handlers after."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.__init__()
    _set_handlers()
    try:
        yield
    finally:
        for s, previous in _state.previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)


PREEMPTION = tuple(s for s in HANDLED if s not in (signal.SIGINT, signal.SIGTERM))  # SIGUSR1, SIGUSR2


def chain_previous_handler() -> None:
    """After the run is closed: a handler the process had before us for this signal, e.g.
    submitit's, which requeues the job (it may exit). A preemption signal (SIGUSR1 or SIGUSR2)
    reaches whichever of the two the process handles: clusters differ in which one they send."""
    signum = _state.signum
    if signum is None:
        return
    for s in (signum, *(p for p in PREEMPTION if p != signum)) if signum in PREEMPTION else (signum,):
        previous = _state.previous.get(s)
        if callable(previous) and previous not in (_handler, signal.default_int_handler):
            previous(s, None)
            return


@contextmanager
def exit_on_signal(on_interrupt: Callable[[], None] | None = None) -> Iterator[None]:
    """Turn :class:`Interrupted` into ``SystemExit(128 + signum)`` (after ``on_interrupt``)."""
    try:
        yield
    except Interrupted as err:
        if on_interrupt is not None:
            on_interrupt()
        chain_previous_handler()
        raise SystemExit(err.exit_code) from None


class GracefulStop(L.Callback):
    """Stops training at the end of the step during which a signal arrived (see the module doc)."""

    def __init__(self, checkpoint_path: Path) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self._stop_after_validation = False
        self._stop_next = False

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        # Lightning has just installed its own SIGTERM handler for this fit (it forwards the
        # signal to DDP children and broadcasts inside the handler): ours must be the one called
        _set_handlers()

    def on_train_start(self, trainer, pl_module) -> None:
        _set_handlers()
        _state.deferred = True

    def on_fit_end(self, trainer, pl_module) -> None:
        _state.deferred = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        _state.deferred = False

    def _agreed(self, trainer) -> bool:
        """True on every rank when any rank received a signal (one collective per step under DDP)."""
        local = _state.signum is not None
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        return local

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)  # every rank calls it; rank 0 writes
        self._stop_next = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and not self._validation_due(trainer):
            # max_steps ends the fit mid-epoch, after the last validation's last.ckpt: keep the
            # last step too, so resume= with a larger budget continues from where this stopped
            trainer.save_checkpoint(self.checkpoint_path, weights_only=False)  # the full training state
            return
        if self._stop_next or self._stop_after_validation or not self._agreed(trainer):
            return
        if self._validation_due(trainer):
            self._stop_after_validation = True  # the epoch's validation is due: save after it
        else:
            self._save(trainer)

    @staticmethod
    def _validation_due(trainer) -> bool:
        loop = trainer.fit_loop
        try:  # Lightning's own test, which knows val_check_interval and check_val_every_n_epoch
            return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
        except (AttributeError, TypeError):
            return bool(loop.epoch_loop.batch_progress.is_last_batch)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        if self._stop_after_validation or (not self._stop_next and self._agreed(trainer)):
            self._save(trainer)
        elif not self._stop_next:
            # Lightning's ModelCheckpoint writes last.ckpt only with a new best.ckpt; here it holds
            # every validation's step (runs/dirs.py LAST), so a run that ends after one (early
            # stopping, a budget, max_epochs) trains on from there when resumed with a larger limit
            trainer.save_checkpoint(self.checkpoint_path, weights_only=False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # the previous step is complete (logged, scheduler stepped): a clean place to stop
        if self._stop_next:
            raise Interrupted(_state.signum or signal.SIGTERM, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        _state.deferred = False
