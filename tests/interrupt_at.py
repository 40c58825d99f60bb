"""``python tests/interrupt_at.py STEP SIGNAL[xN] [train.py overrides...]``: train.py itself, plus one
callback that sends the real signal SIGNAL (N times, e.g. ``SIGINTx2``) to its own process
when training has finished step STEP: on global rank ``INTERRUPT_RANK`` (default 0), and in a sweep
only in job ``INTERRUPT_JOB`` if set. Under trainer=ddp every rank runs this script, not train.py.
With ``EVENTS_DIR`` set, each rank also writes there what the tests wait on and compare:
a line with its pid in ``rank<r>.pid`` at the start of training and a line ``<global step> <sha1 of the batch> <loss>``
in ``rank<r>.steps`` after every step, and the step training ended at in ``rank<r>.end``.
The tests use it to interrupt at a known step; everything after the kill (the handler, the
checkpoint, the records, the exit code) is the code under test.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import signal
import sys
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probes import job_name  # noqa: E402  (tests/, this script's folder, is on sys.path)

from article_gpt.parallel import ddp  # noqa: E402
from article_gpt.training import run  # noqa: E402


class SignalAtStep(L.Callback):
    def __init__(self, step: int, signum: int, times: int) -> None:
        self.step, self.signum, self.times = step, signum, times

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step or trainer.global_rank != int(os.environ.get("INTERRUPT_RANK", "0")):
            return
        job = os.environ.get("INTERRUPT_JOB")
        if job is not None and job_name() != job:
            return
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)


class Events(L.Callback):
    """Each rank's pid, and the batch it trained on and its loss at every step, in ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_start(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank{trainer.global_rank}.pid", "a") as f:  # a sweep: one line a job
            f.write(f"{os.getpid()}\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        digest = hashlib.sha1(batch[0].numpy().tobytes()).hexdigest()
        with open(self.folder / f"rank{trainer.global_rank}.steps", "a") as f:
            f.write(f"{trainer.global_step - 1} {digest} {float(outputs['loss'])!r}\n")

    def on_train_end(self, trainer, pl_module) -> None:
        with open(self.folder / f"rank{trainer.global_rank}.end", "a") as f:  # a sweep: one line a job
            f.write(f"{trainer.global_step}\n")


def main() -> None:
    step, (name, _, times) = int(sys.argv[1]), sys.argv[2].partition("x")
    own_args = sys.argv[1:3]
    build_trainer, job_command = run.build_trainer, ddp.job_command

    def with_signal(cfg, loggers, extra_callbacks, run_dir):
        sender = SignalAtStep(step, signal.Signals[name], int(times or 1))
        events = [Events(os.environ["EVENTS_DIR"])] if os.environ.get("EVENTS_DIR") else []
        return build_trainer(cfg, loggers, [sender, *events, *extra_callbacks], run_dir)

    def ranks_run_this_script():
        command, cwd = job_command()
        return [command[0], str(Path(__file__).resolve()), *own_args, *command[2:]], cwd

    run.build_trainer, ddp.job_command = with_signal, ranks_run_this_script
    sys.argv = [str(ROOT / "train.py"), *sys.argv[3:]]
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
