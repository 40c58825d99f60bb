"""What a run's console shows and what its ``train.log`` keeps. conf/hydra/default.yaml
(``hydra.job_logging``) wires it into every job: a single run, each job of a sweep on any
launcher, each DDP rank. Any ``hydra/job_logging`` choice works with it (none of it names a
handler): default (console + train.log), stdout (console only), disabled, none.

* Each line once. Lightning prints its records through a handler of its own (``INFO: ...`` on
  stderr, added to the ``lightning`` logger when Lightning is imported) and they also reach
  Hydra's handlers through the root logger: printed twice. ``drop_tips`` removes Lightning's
  handlers as Hydra configures the job's logging: each line prints once, through Hydra's console
  handler (stdout, Hydra's format), and stays in ``train.log``.
* No third-party tips. Lightning's advertisements for its cloud products (``TIPS``) are dropped
  by message where Lightning logs them (job_logging puts ``DropTips`` on that logger), and its hint
  to prepend ``srun`` (a warning, issued wherever an ``srun`` binary is on PATH outside a SLURM
  job) by its message too (``WARNING_TIPS``). Every other Lightning line and warning is kept.
* The lines one looks for later. The end-of-run summary and an offline W&B run's ``wandb sync``
  command, printed on the console as they always were, go to ``train.log`` as well
  (``to_run_log``): the job's log files, not a second copy on the console.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable

# logged by lightning.pytorch.utilities.rank_zero (rank_zero_info) as a Trainer is built
TIPS = (
    re.compile(r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]"),
    re.compile(r"💡 Tip: For seamless cloud uploads and versioning, try installing \[litmodels\]"),
)
# issued with warnings.warn (lightning/fabric/plugins/environments/slurm.py, _validate_srun_used)
WARNING_TIPS = (r"The `srun` command is available on your system but is not used\. HINT: ",)
# Lightning's loggers that may hold a handler of Lightning's own (lightning/__init__.py always;
# lightning/pytorch/__init__.py and lightning/fabric/__init__.py when the root logger had none)
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
RUN_LOG = "article_gpt.run_log"  # the logger name train.log shows on the summary lines


class DropTips(logging.Filter):
    """Drops a record whose message is one of Lightning's tips (``TIPS``); keeps every other one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(tip.match(message) for tip in TIPS)


def drop_tips() -> DropTips:
    """job_logging's ``lightning_tips`` filter: a ``()`` factory, called as Hydra configures a job's
    logging, before the job builds its Trainer. In the same step, the two things no filter on a
    logger can do: Lightning's own console handlers go, and its ``srun`` hint (a warning, not a
    record) is ignored by its message."""
    one_console()
    for message in WARNING_TIPS:
        warnings.filterwarnings("ignore", message=message)
    return DropTips()


def one_console() -> None:
    """Lightning's records reach the console once, through the root logger's handlers. Lightning
    adds its handler when first imported: a job that has not imported it yet (a sweep's first
    job) imports it here, as it is about to anyway, so that handler exists to be removed."""
    import lightning  # noqa: F401

    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
        logger.propagate = True


def to_run_log(lines: Iterable[str]) -> None:
    """Write lines to the job's log files (Hydra's ``train.log``: the root logger's file handlers)
    and nowhere else: the console has them already. No file handler (the task called in-process,
    ``hydra/job_logging=stdout``): nothing is written."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not files:
        return
    log = logging.getLogger(RUN_LOG)
    for line in lines:
        record = log.makeRecord(RUN_LOG, logging.INFO, __file__, 0, line, None, None)
        for handler in files:
            handler.handle(record)
