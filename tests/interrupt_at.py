"""``python tests/interrupt_at.py STEP SIGNAL[xN] [train.py overrides...]``: train.py itself, plus one
callback that sends the real signal SIGNAL (N times, e.g. ``SIGINTx2``) to its own process
(rank 0 only; in a sweep only job ``INTERRUPT_JOB`` if set) when training has finished step STEP.
The tests use it to interrupt at a known step; everything after the kill (the handler, the
checkpoint, the records, the exit code) is the code under test.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from article_gpt.training import run  # noqa: E402


class SignalAtStep(L.Callback):
    def __init__(self, step: int, signum: int, times: int) -> None:
        self.step, self.signum, self.times = step, signum, times

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step or trainer.global_rank != 0:
            return
        job = os.environ.get("INTERRUPT_JOB")
        if job is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.get("num") != int(job):
                return
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)


def main() -> None:
    step, (name, _, times) = int(sys.argv[1]), sys.argv[2].partition("x")
    build_trainer = run.build_trainer

    def with_signal(cfg, loggers, extra_callbacks, run_dir):
        sender = SignalAtStep(step, signal.Signals[name], int(times or 1))
        return build_trainer(cfg, loggers, [sender, *extra_callbacks], run_dir)

    run.build_trainer = with_signal
    sys.argv = [str(ROOT / "train.py"), *sys.argv[3:]]
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
