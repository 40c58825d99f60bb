"""An Optuna search as a Hydra sweeper: ask a batch of trials, launch them, tell the results.

``python train.py -m hparams_search=optuna`` (conf/hparams_search/optuna.yaml) selects
``hydra/sweeper=optuna``. The sweeper owns Optuna's ask-and-tell loop and hands each batch of
``n_jobs`` trials to whatever Hydra launcher is configured (basic, joblib, submitit, ...), so
trials run where the launcher runs jobs. Each job gets the sampled parameters as overrides,
``trial={study,storage,number}`` for pruning (article_gpt/training/pruning.py) and
``hydra.sweep.subdir=<trial number>``, so job directories never collide across re-runs.

The study lives in ``<sweep dir>/optuna.db`` (SQLite) unless ``storage`` names another URL
(e.g. PostgreSQL shared by several machines). Running the same search again into the same
sweep dir (``hydra.sweep.dir=...``) continues the study: ``n_trials`` counts every trial the
study holds, so no trial is asked twice. A trial left RUNNING by a killed sweep (its sweep dir
is this one) is not asked again but launched again with its own number and parameters into
its own directory: a job that had finished is told from its metrics.json; any other resumes
or restarts there, as any job does that starts where a run already is.

Hydra only instantiates sweepers that live under the ``hydra_plugins`` package; the class it
names is a thin subclass in hydra_plugins/article_gpt_optuna. Nothing heavy is imported here:
Hydra imports every plugin module at each start, single runs included.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from article_gpt.errors import ConfigError, exit_on_user_error
from article_gpt.runs import record
from article_gpt.runs.dirs import MULTIRUN
from article_gpt.runs.record import MAXIMIZED, Status  # MAXIMIZED: every other metric is minimized

log = logging.getLogger(__name__)

SAMPLER_OPTIONS = {"tpe": ("seed", "n_startup_trials"), "random": ("seed",), "grid": ("seed",),
                   "cmaes": ("seed", "n_startup_trials")}  # the options each sampler takes
PRUNABLE = {"val_loss", "val_ppl"}  # the pruning callback reports val/loss: these agree with it
BEST_FILE = "best_trial.yaml"


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _grid_sampler_class():
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler, minus its ``study.stop()`` at the grid's end (which only works inside
        ``study.optimize``): this sweeper asks no more trials than the grid has points."""

        def after_trial(self, study, trial, state, values) -> None:
            pass

    return GridSampler


class OptunaSweeperImpl(Sweeper):
    def __init__(self, n_trials: int = 20, n_jobs: int = 1, sampler: Any = None, pruner: Any = None,
                 direction: str = "auto", study_name: str | None = None, storage: str | None = None,
                 params: Any = None) -> None:
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler = dict(sampler or {"name": "tpe"})  # {name, seed, n_startup_trials}
        self.pruner = dict(pruner or {"name": "none"})  # {name, and that pruner's options}
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.params = params if isinstance(params, dict) else OmegaConf.to_container(params or {}, resolve=False)
        self.hydra_context = self.config = self.launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # --- the checks that run before anything is written --------------------------------------
    def _check(self) -> tuple[str, str]:
        """(direction, metric); a ConfigError names the first bad sweeper setting."""
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key}={value}: must be a positive integer")
        if self.sampler.get("name") not in SAMPLER_OPTIONS:
            raise ConfigError(f"hydra.sweeper.sampler.name={self.sampler.get('name')}: must be one of "
                              f"{', '.join(SAMPLER_OPTIONS)}")
        metric = str(self.config.get("optimized_metric") or "val_loss")
        direction = self.direction
        if direction == "auto":
            direction = "maximize" if metric in MAXIMIZED else "minimize"
        if direction not in ("minimize", "maximize"):
            raise ConfigError(f"hydra.sweeper.direction={direction}: must be auto, minimize or maximize")
        if self.pruner.get("name") != "none" and metric not in PRUNABLE:
            raise ConfigError(f"hydra.sweeper.pruner.name={self.pruner.get('name')}: pruning compares val/loss, "
                              f"so optimized_metric={metric} needs hydra.sweeper.pruner.name=none")
        return direction, metric

    def _sampler(self, space):
        import optuna

        name = self.sampler["name"]
        opts = {k: self.sampler[k] for k in SAMPLER_OPTIONS[name] if self.sampler.get(k) is not None}
        if name == "grid":
            continuous = [n for n, d in space.dims.items() if d.grid is None]
            if continuous:
                raise ConfigError(f"hydra.sweeper.sampler.name=grid: {continuous[0]} is an interval; the grid "
                                  "sampler needs choice(...) or range(...)")
            return _grid_sampler_class()(space.grid(), **opts)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(**opts)
        return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[name](**opts)

    # --- the loop -------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        from article_gpt.sweeps import search_space
        from article_gpt.training import pruning

        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        with exit_on_user_error():  # one line and exit 2, before the sweep dir exists
            direction, metric = self._check()
            space = search_space.parse(self.params, arguments, self.config, self.hydra_context.config_loader)
            if not space.dims:
                raise ConfigError("hydra.sweeper.params: empty search space; give keys such as "
                                  "model.heads: choice(2,4,8) (or a sweep on the command line)")
            sampler = self._sampler(space)
            try:
                spec = pruning.pruner_spec(self.pruner)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"hydra.sweeper.pruner.name={self.pruner.get('name')}: {err}") from None
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN)
        url = self.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
        name = self.study_name or sweep_dir.name
        study = optuna.create_study(study_name=name, storage=pruning.open_storage(url), sampler=sampler,
                                    pruner=pruning.build_pruner(spec), direction=direction, load_if_exists=True)
        study.set_user_attr(pruning.PRUNER_ATTR, spec)
        n_trials = self.n_trials
        if self.sampler["name"] == "grid":
            size = math.prod(len(v) for v in space.grid().values())
            n_trials = min(n_trials, size)  # past the grid, Optuna would repeat points
        with exit_on_user_error():  # a damaged record of a stale trial: one line naming the file
            again = self._stale_trials(study, sweep_dir, metric)
        log.info(f"Optuna study '{name}' in {url}: {len(study.trials)} trials so far, {n_trials} wanted, "
                 f"{self.sampler['name']} sampler, {spec['name']} pruner, {direction} {metric}")
        returns = []
        while True:
            batch = again[: self.n_jobs]
            again = again[len(batch):]
            while len(batch) < self.n_jobs and len(study.trials) < n_trials:
                trial = study.ask(space.distributions)
                trial.set_user_attr("sweep_dir", str(sweep_dir))
                batch.append((trial.number, trial.params))
            if not batch:
                break
            jobs = [space.overrides(params) + [
                f"trial={{study:{_quoted(name)},storage:{_quoted(url)},number:{number}}}",
                f"hydra.sweep.subdir={number}"] for number, params in batch]
            results = self.launcher.launch(jobs, initial_job_idx=batch[0][0])
            for (number, _), result in zip(batch, results):
                self._tell(study, number, result)
            returns.append(results)
        self._write_best(study, sweep_dir, metric, url)
        return returns

    def _stale_trials(self, study, sweep_dir: Path, metric: str) -> list[tuple[int, dict]]:
        """Trials a killed run of this sweep left RUNNING: told from their records, or launched again."""
        from optuna.trial import TrialState

        again = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("sweep_dir") != str(sweep_dir):
                continue  # another machine's live trial in a shared study
            rec = record.read(sweep_dir / str(t.number))  # a damaged one: RecordError, one line
            value = rec.to_dict().get(metric) if rec else None
            if rec and rec.status is Status.COMPLETED and isinstance(value, (int, float)) and math.isfinite(value):
                study.tell(t.number, float(value))
            elif rec and rec.status is Status.PRUNED:
                study.tell(t.number, state=TrialState.PRUNED)
            else:
                again.append((t.number, dict(t.params)))
        if again:
            log.info(f"Optuna: trials {[n for n, _ in again]} were left running by a stopped sweep; running them again")
        return again

    def _tell(self, study, number: int, result) -> None:
        from optuna.trial import TrialState

        from article_gpt.training.pruning import PRUNED_ATTR

        try:
            value = float(result.return_value)
        except Exception:  # the job raised: a failed trial, the search goes on
            value = math.nan
        (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if PRUNED_ATTR in frozen.user_attrs:
            study.tell(number, state=TrialState.PRUNED)
        elif math.isfinite(value):
            study.tell(number, value)
        else:
            study.tell(number, state=TrialState.FAIL)

    def _write_best(self, study, sweep_dir: Path, metric: str, url: str) -> None:
        """``best_trial.yaml`` in the sweep dir: the best trial's number, value and parameters."""
        from optuna.trial import TrialState

        states = [t.state for t in study.get_trials(deepcopy=False)]
        counts = {s.name.lower(): states.count(s) for s in TrialState if states.count(s)}
        record: dict[str, Any] = {"study": study.study_name, "storage": url, "direction": study.direction.name.lower(),
                                  "optimized_metric": metric, "trials": counts}
        try:
            best = study.best_trial
            record["best"] = {"number": best.number, "value": best.value, "params": best.params,
                              "job_dir": str(sweep_dir / str(best.number))}
            params = " ".join(f"{k}={v}" for k, v in best.params.items())
            log.info(f"Optuna: best trial {best.number}: {metric}={best.value:.4f} ({params})")
        except ValueError:  # no trial completed
            record["best"] = None
            log.info("Optuna: no trial completed")
        OmegaConf.save(OmegaConf.create(record), sweep_dir / BEST_FILE)
