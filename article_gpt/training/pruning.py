"""Optuna pruning from inside a training run, through the study's storage.

The Optuna sweeper (article_gpt/sweeps/optuna_sweeper.py) gives each job a ``trial`` config
key: the study's name, its storage URL and the trial's number. ``OptunaPruning`` opens that
storage wherever the job runs (the sweeper's process, a joblib worker, a SLURM node), reports
the val loss after every validation and asks the study's pruner whether to go on. A pruned
run stops cleanly after that validation (``status: pruned``), marks the trial ``pruned`` in
the storage, and the sweeper, which owns ask and tell, records it as PRUNED.

The step reported is the validation's index (0 = the first validation after training began),
not the optimizer step: trials with another block size or batch size take a different number
of steps per epoch, and the median pruner compares trials at equal steps.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L

from article_gpt.runs import dirs

# The pruner is not stored by Optuna, only its name and options (a study user attribute), so
# every process that asks should_prune() builds the same one. The options each pruner takes
# (conf/hydra/sweeper/optuna.yaml lists them all, with their defaults):
PRUNER_OPTIONS: dict[str, tuple[str, ...]] = {
    "median": ("n_startup_trials", "n_warmup_steps"),
    "successive_halving": ("min_resource", "reduction_factor"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
    "none": (),
}
PRUNER_ATTR = "pruner"  # study user attribute: {"name": ..., "options": {...}}
PRUNED_ATTR = "pruned_at"  # trial user attribute: the validation index the trial was pruned at


def build_pruner(spec: dict):
    import optuna

    name, options = spec.get("name", "none"), dict(spec.get("options") or {})
    classes = {"median": optuna.pruners.MedianPruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
               "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner}
    return classes[name](**options)


def pruner_spec(pruner: dict) -> dict:
    """The stored form of ``hydra.sweeper.pruner``: its name and the options that pruner takes.
    A ValueError says what would be valid."""
    name = pruner.get("name", "none")
    if name not in PRUNER_OPTIONS:
        raise ValueError(f"must be one of {', '.join(PRUNER_OPTIONS)}")
    spec = {"name": name, "options": {k: pruner[k] for k in PRUNER_OPTIONS[name] if pruner.get(k) is not None}}
    build_pruner(spec)  # a bad option value fails here, in the sweeper, before any trial
    return spec


def open_storage(url: str):
    """An Optuna storage for ``url``: a database URL (``sqlite:///...``, ``postgresql://...``), or
    any other text is a journal file's path (JournalStorage, as optuna-dashboard reads it). SQLite
    waits up to a minute for a lock: parallel jobs write their intermediate values to one file."""
    import optuna

    if not dirs.is_database_url(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


class OptunaPruning(L.Callback):
    """Report ``val/loss`` after each validation to trial ``number`` of ``study``; stop when pruned.
    ``prune=False`` (a multi-objective trial: Optuna can neither take its reports nor prune it,
    optuna#3450) only records the trial, on every rank alike."""

    def __init__(self, study: str, storage: str, number: int, monitor: str = "val/loss", prune: bool = True) -> None:
        self.study_name, self.storage_url, self.number, self.monitor = study, storage, int(number), monitor
        self.prune = bool(prune)
        self.validations = 0
        self.pruned_at: int | None = None
        self._trial = None

    def _connect(self):
        if self._trial is None:
            import optuna

            storage = open_storage(self.storage_url)
            study = optuna.load_study(study_name=self.study_name, storage=storage)
            study.pruner = build_pruner(study.user_attrs.get(PRUNER_ATTR) or {"name": "none"})
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.prune:
            return
        step, self.validations = self.validations, self.validations + 1
        prune = False
        if trainer.is_global_zero:  # one report per validation, whatever the number of ranks
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                value = float(value)
                trial = self._connect()
                try:
                    trial.report(value if math.isfinite(value) else math.inf, step)
                    prune = trial.should_prune()
                except Exception as err:  # e.g. the trial was finished meanwhile: train on, unpruned
                    warnings.warn(f"optuna: trial {self.number}: could not report ({err})", stacklevel=1)
                if prune:
                    trial.set_user_attr(PRUNED_ATTR, step)
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned_at = step
            trainer.should_stop = True

    @property
    def pruned(self) -> bool:
        return self.pruned_at is not None

    def record(self) -> dict:
        """What metrics.json keeps about the trial."""
        return {"trial_number": self.number, "study": self.study_name, "pruned_at_validation": self.pruned_at}


def pruning_callback(trial_cfg: Any) -> OptunaPruning | None:
    """The callback for a job the Optuna sweeper launched (``trial`` set), else None."""
    if not trial_cfg:
        return None
    return OptunaPruning(study=trial_cfg["study"], storage=trial_cfg["storage"], number=trial_cfg["number"],
                         prune=trial_cfg.get("prune", True))
