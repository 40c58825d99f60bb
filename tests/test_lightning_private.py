"""The Lightning internals the project relies on, one test each (pyproject pins lightning>=2.6,<2.7).

Lightning does not promise that a private class, attribute or method survives a release, and a
project that uses one finds out as a crash in the middle of a run, or worse, as a silent
fallback (signals.py) or an attribute that is now set on nothing (budget.py). Each test here
checks one such hook exists and behaves as its user relies on, on a real tiny Trainer where that
matters, and on failure names the hook and the file to update. Before raising the pin past 2.6,
run this file against the new Lightning.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

SIGNALS = "article_gpt/recovery/signals.py (GracefulStop._validation_due)"
CHECKPOINT_IO = "article_gpt/recovery/checkpoint_io.py (ResumeState.on_save_checkpoint)"
BUDGET = "article_gpt/training/budget.py (ComputeBudget.setup)"
DDP = "article_gpt/parallel/ddp.py (JobLauncher, JobDDPStrategy)"


def broken(hook: str, user: str, what: str) -> str:
    return (f"Lightning {L.__version__}: {hook} {what}; {user} relies on it: update that file "
            "(and the lightning pin in pyproject.toml)")


def hook(obj, path: str, user: str):
    """``obj.<path>`` (dotted), or a failure naming the hook and the file that uses it."""
    for name in path.split("."):
        if not hasattr(obj, name):
            pytest.fail(broken(path, user, f"is gone ({type(obj).__name__} has no {name!r})"), pytrace=False)
        obj = getattr(obj, name)
    return obj


class Tiny(L.LightningModule):
    """A linear layer on 8 random rows, 2 per batch: 4 training batches an epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val", self.layer(batch[0]).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


def fit(tmp_path, *callbacks, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   default_root_dir=tmp_path)
    trainer = L.Trainer(callbacks=list(callbacks), **{**options, **kwargs})
    trainer.fit(Tiny())
    return trainer


def test_should_check_val_fx_says_when_the_epochs_validation_is_due(tmp_path):
    """signals.py asks, at the end of a training batch, whether validation follows it (a signal
    then saves after that validation): epoch_loop._should_check_val_fx(fit_loop._data_fetcher).
    It catches AttributeError/TypeError and falls back to is_last_batch, which ignores
    val_check_interval: a renamed hook would go unnoticed there, so it is pinned here."""
    name = "fit_loop.epoch_loop._should_check_val_fx(fit_loop._data_fetcher)"
    due = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            check = hook(trainer, "fit_loop.epoch_loop._should_check_val_fx", SIGNALS)
            fetcher = hook(trainer, "fit_loop._data_fetcher", SIGNALS)
            try:
                due.append(check(fetcher))
            except TypeError as err:
                pytest.fail(broken(name, SIGNALS, f"takes other arguments now ({err})"), pytrace=False)

    fit(tmp_path, Probe(), val_check_interval=2)  # 4 batches: validation after the 2nd and the 4th
    assert due == [False, True, False, True], broken(name, SIGNALS, f"answered {due} for validation after "
                                                                    "batches 2 and 4 (expected [F, T, F, T])")


def test_batch_progress_counts_the_epochs_trained_batches(tmp_path):
    """checkpoint_io.py records where in the epoch a checkpoint was taken from
    fit_loop.epoch_loop.batch_progress.current.processed: the batches trained this epoch, both in
    a save from on_train_batch_end (signals.py) and in one after the epoch's validation."""
    name = "fit_loop.epoch_loop.batch_progress.current.processed"
    saved = []

    class SaveMidEpoch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 1:  # as GracefulStop._save does
                trainer.save_checkpoint(tmp_path / "mid.ckpt", weights_only=False)

        def on_validation_end(self, trainer, pl_module):
            trainer.save_checkpoint(tmp_path / "end.ckpt", weights_only=False)  # as ModelCheckpoint does

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            saved.append(hook(trainer, name, CHECKPOINT_IO))

    trainer = fit(tmp_path, SaveMidEpoch())
    assert saved == [2, trainer.num_training_batches] == [2, 4], broken(
        name, CHECKPOINT_IO, f"was {saved} in saves after batch 2 and after the epoch (expected [2, 4])")


def test_loop_limits_set_in_setup_end_the_fit(tmp_path):
    """budget.py turns a token budget into a step limit once the data is known, in Callback.setup:
    fit_loop.epoch_loop.max_steps = N and fit_loop.max_epochs = -1. Assigning an attribute that
    no longer exists would raise nothing, so both are checked to exist and to end the fit."""

    class Budget(L.Callback):
        def setup(self, trainer, pl_module, stage):
            for name in ("fit_loop.epoch_loop.max_steps", "fit_loop.max_epochs"):
                hook(trainer, name, BUDGET)
            trainer.fit_loop.epoch_loop.max_steps = 6
            trainer.fit_loop.max_epochs = -1

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trainer.should_stop = trainer.should_stop or trainer.global_step >= 12  # a limit that no longer binds

    trainer = fit(tmp_path, Budget(), max_epochs=1)  # 4 batches an epoch: 6 steps need a second epoch
    assert (trainer.global_step, trainer.max_steps) == (6, 6), broken(
        "fit_loop.epoch_loop.max_steps / fit_loop.max_epochs set in Callback.setup", BUDGET,
        f"no longer end the fit there (global_step {trainer.global_step}, max_steps {trainer.max_steps})")


def test_subprocess_script_launcher_is_where_ddp_takes_it_from():
    """ddp.py subclasses _SubprocessScriptLauncher: its module path, constructor, launch()
    signature, the attributes JobLauncher reads and _check_can_spawn_children."""
    module = "lightning.pytorch.strategies.launchers.subprocess_script"
    try:
        launchers = importlib.import_module(module)
    except ImportError as err:
        pytest.fail(broken(module, DDP, f"cannot be imported ({err})"), pytrace=False)
    cls = hook(launchers, "_SubprocessScriptLauncher", DDP)
    init = list(inspect.signature(cls.__init__).parameters)[1:]
    assert init == ["cluster_environment", "num_processes", "num_nodes"], broken(
        "_SubprocessScriptLauncher.__init__", DDP, f"takes {init} now")
    launch = inspect.signature(cls.launch).parameters  # JobLauncher.launch(self, function, *args, trainer=None, ...)
    trainer = launch.get("trainer")
    assert list(launch)[:2] == ["self", "function"] and trainer and trainer.kind is inspect.Parameter.KEYWORD_ONLY, \
        broken("_SubprocessScriptLauncher.launch", DDP, f"has the signature {inspect.signature(cls.launch)} now")
    from lightning.fabric.plugins.environments import LightningEnvironment

    launcher = cls(LightningEnvironment(), 2, 1)
    for name in ("procs", "cluster_environment", "num_processes", "num_nodes"):
        hook(launcher, name, DDP)
    assert launcher.procs == [], broken("_SubprocessScriptLauncher.procs", DDP, "is not an empty list at first")
    hook(launcher, "_check_can_spawn_children", DDP)()  # a fresh launcher at local rank 0 may spawn


def test_ddp_strategy_takes_the_job_launcher_and_launch_runs_the_fit(tmp_path, monkeypatch):
    """JobDDPStrategy overrides DDPStrategy._configure_launcher and replaces self._launcher, which
    Lightning must call as it builds the Trainer and return as strategy.launcher; Lightning then
    calls launcher.launch(function, *args, trainer=...) for the fit. One rank (no children): a
    real fit through JobLauncher, on gloo with a world of one."""
    try:
        from article_gpt.parallel import ddp
    except ImportError as err:
        pytest.fail(broken("lightning.pytorch.strategies.launchers.subprocess_script._SubprocessScriptLauncher", DDP,
                           f"cannot be imported ({err})"), pytrace=False)
    hook(ddp.DDPStrategy, "_configure_launcher", DDP)
    monkeypatch.setattr(ddp, "job_command", lambda: ([sys.executable, "-c", "pass"], os.getcwd()))  # no Hydra here
    before = ddp.rank_environment()
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=ddp.JobDDPStrategy(), max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path)
    try:
        launcher = hook(trainer, "strategy.launcher", DDP)
        assert type(launcher) is ddp.JobLauncher, broken(
            "DDPStrategy._configure_launcher / Strategy._launcher", DDP,
            f"did not let JobDDPStrategy put its launcher in (strategy.launcher is {type(launcher).__name__})")
        trainer.fit(Tiny())
        assert trainer.global_step == 2 and getattr(launcher, "watcher", None) is not None, broken(
            "Strategy.launcher.launch", DDP, "was not called through JobLauncher.launch for the fit")
    finally:
        ddp.end_job(trainer, before, failed=False)
