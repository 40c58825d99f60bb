"""An Optuna search as a Hydra sweeper: ask a batch of trials, launch them, tell the results.

``python train.py -m hparams_search=optuna`` (conf/hparams_search/optuna.yaml) selects
``hydra/sweeper=optuna``. The sweeper owns Optuna's ask-and-tell loop and hands each batch of
``n_jobs`` trials to whatever Hydra launcher is configured (basic, joblib, submitit, ...), so
trials run where the launcher runs jobs. Each job gets the sampled parameters as overrides,
``trial={study,storage,number}`` for pruning (article_gpt/training/pruning.py) and
``hydra.sweep.subdir=<trial number>``, so job directories never collide across re-runs.

The study lives in ``<sweep dir>/optuna_journal.log`` (Optuna's JournalStorage on a file: safe
for several processes and on a shared filesystem, where SQLite is not, optuna#820) unless
``storage`` names a database URL or another journal file; a sweep dir that already holds an
``optuna.db`` continues on it. Running the same search again into the same sweep dir
(``hydra.sweep.dir=...``) continues the study: ``n_trials`` counts every trial the study holds.
Several sweeper processes may share one study (the same storage and ``study_name``: Optuna's
distributed search, and the way round Hydra's batch-synchronous sweepers, hydra#3091): each
counts and asks under one lock file beside the storage, so together they ask exactly
``n_trials`` and a grid point once, and trial N runs in ``<sweep dir>/N``, one process each.
A trial left RUNNING by a killed sweep (its sweep dir is this one and the process that asked it
no longer holds its file in ``.optuna_workers/``) is not asked again but launched again with its
own number and parameters into its own directory: a job that had finished is told from its
metrics.json; any other resumes or restarts there, as any job does that starts where a run is.

With ``objectives`` (``hparams_search=optuna_pareto``) the study has one direction per record key
(article_gpt/sweeps/pareto.py), each trial is told the values its metrics.json holds, and nothing
is pruned: Optuna cannot prune a multi-objective trial (optuna#3450).

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
from article_gpt.runs.record import Status
from article_gpt.runs.record import direction as record_direction
from article_gpt.sweeps import pareto
from article_gpt.sweeps.optuna_workers import WORKER_ATTR, Worker, ask_lock, locked, storage_url, wait_for_others

log = logging.getLogger(__name__)

SAMPLER_OPTIONS = {"tpe": ("seed", "n_startup_trials", "multivariate", "constant_liar"), "random": ("seed",),
                   "grid": ("seed",), "cmaes": ("seed", "n_startup_trials")}  # the options each sampler takes
PRUNABLE = {"val_loss", "val_ppl"}  # the pruning callback reports val/loss: these agree with it
BEST_FILE = "best_trial.yaml"
NO_PRUNING = "Optuna cannot prune multi-objective trials (optuna#3450): this search runs without pruning"


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
                 direction: str = "auto", objectives: Any = None, study_name: str | None = None,
                 storage: str | None = None, params: Any = None) -> None:
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler = dict(sampler or {"name": "tpe"})  # {name, seed, n_startup_trials, TPE's options}
        self.pruner = dict(pruner or {"name": "none"})  # {name, and that pruner's options}
        self.direction, self.objectives = direction, objectives  # objectives: {record key: direction}
        self.study_name, self.storage = study_name, storage
        self.params = params if isinstance(params, dict) else OmegaConf.to_container(params or {}, resolve=False)
        self.hydra_context = self.config = self.launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # --- the checks that run before anything is written --------------------------------------
    def _check(self) -> dict[str, str]:
        """``{metric: direction}``, one per objective; a ConfigError names the first bad setting."""
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key}={value}: must be a positive integer")
        if self.sampler.get("name") not in SAMPLER_OPTIONS:
            raise ConfigError(f"hydra.sweeper.sampler.name={self.sampler.get('name')}: must be one of "
                              f"{', '.join(SAMPLER_OPTIONS)}")
        goals = pareto.objectives(self.objectives)
        if goals:
            return goals
        metric = str(self.config.get("optimized_metric") or "val_loss")
        direction = self.direction
        if direction == "auto":
            direction = record_direction(metric)
        if direction not in ("minimize", "maximize"):
            raise ConfigError(f"hydra.sweeper.direction={direction}: must be auto, minimize or maximize")
        if self.pruner.get("name") != "none" and metric not in PRUNABLE:
            raise ConfigError(f"hydra.sweeper.pruner.name={self.pruner.get('name')}: pruning compares val/loss, "
                              f"so optimized_metric={metric} needs hydra.sweeper.pruner.name=none")
        return {metric: direction}

    def validated(self, arguments: list[str], loader) -> tuple[dict[str, str], Any]:
        """The objectives and the search space, every setting checked (ConfigError, one line):
        what the sweep runs before it writes anything, and what plan=true prices."""
        from article_gpt.sweeps import search_space

        goals = self._check()
        space = search_space.parse(self.params, arguments, self.config, loader)
        if not space.dims:
            raise ConfigError("hydra.sweeper.params: empty search space; give keys such as "
                              "model.heads: choice(2,4,8) (or a sweep on the command line)")
        self._sampler(space)  # the grid sampler's own refusal of an interval
        return goals, space

    def trial_count(self, space) -> int:
        """``n_trials``, or a grid's size where that is smaller (past the grid Optuna would repeat points)."""
        if self.sampler["name"] == "grid":
            return min(self.n_trials, math.prod(len(v) for v in space.grid().values()))
        return self.n_trials

    def _sampler(self, space, number: int = 0):
        """The sampler that asks trial ``number``. Its seed is ``seed + number``, so workers sharing
        a study, and a search continued, do not draw the same start-up trials again; the grid keeps
        one seed, so every worker walks the same shuffled grid, point ``number`` for trial ``number``."""
        import optuna

        name = self.sampler["name"]
        opts = {k: self.sampler[k] for k in SAMPLER_OPTIONS[name] if self.sampler.get(k) is not None}
        if name == "grid":
            continuous = [n for n, d in space.dims.items() if d.grid is None]
            if continuous:
                raise ConfigError(f"hydra.sweeper.sampler.name=grid: {continuous[0]} is an interval; the grid "
                                  "sampler needs choice(...) or range(...)")
            return _grid_sampler_class()(space.grid(), **opts)
        if "seed" in opts:
            opts["seed"] += number
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(**opts)
        return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[name](**opts)

    # --- the loop -------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        from article_gpt.training import pruning

        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        with exit_on_user_error():  # one line and exit 2, before the sweep dir exists
            goals, space = self.validated(arguments, self.hydra_context.config_loader)
            try:
                spec = pruning.pruner_spec(self.pruner if len(goals) == 1 else {"name": "none"})
            except (ValueError, TypeError) as err:
                raise ConfigError(f"hydra.sweeper.pruner.name={self.pruner.get('name')}: {err}") from None
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN)
        url, name = storage_url(self.storage, sweep_dir), self.study_name or sweep_dir.name
        study = optuna.create_study(study_name=name, storage=pruning.open_storage(url), load_if_exists=True,
                                    pruner=pruning.build_pruner(spec), directions=list(goals.values()))
        study.set_user_attr(pruning.PRUNER_ATTR, spec)
        n_trials = self.trial_count(space)
        lock, worker = ask_lock(url, sweep_dir), Worker(sweep_dir)
        try:
            return self._loop(study, space, goals, n_trials, spec, url, sweep_dir, lock, worker)
        finally:
            worker.close()

    def _loop(self, study, space, goals: dict[str, str], n_trials: int, spec: dict, url: str, sweep_dir: Path,
              lock, worker: Worker) -> list:
        with exit_on_user_error():  # a damaged record of a stale trial: one line naming the file
            again = locked(lock, self._stale_trials, study, sweep_dir, goals, worker)
        name, objectives = study.study_name, ", ".join(f"{d} {k}" for k, d in goals.items())
        log.info(f"Optuna study '{name}' in {url}: {len(study.trials)} trials so far, {n_trials} wanted, "
                 f"{self.sampler['name']} sampler, {spec['name']} pruner, {objectives}")
        if len(goals) > 1:
            log.info(NO_PRUNING)
        prune = "" if len(goals) == 1 else ",prune:false"
        returns = []
        while True:
            batch = again[: self.n_jobs]
            again = again[len(batch):]
            batch += locked(lock, self._ask, study, space, self.n_jobs - len(batch), n_trials, sweep_dir, worker)
            if not batch:
                break
            jobs = [space.overrides(params) + [
                f"trial={{study:{_quoted(name)},storage:{_quoted(url)},number:{number}{prune}}}",
                f"hydra.sweep.subdir={number}"] for number, params in batch]
            results = self.launcher.launch(jobs, initial_job_idx=batch[0][0])
            for (number, _), result in zip(batch, results):
                self._tell(study, number, result, goals, sweep_dir)
            returns.append(results)
        wait_for_others(study, sweep_dir, worker)  # then this worker's summary counts every trial
        self._write_best(study, sweep_dir, goals, url)
        return returns

    def _ask(self, study, space, want: int, n_trials: int, sweep_dir: Path, worker: Worker) -> list[tuple[int, dict]]:
        """Up to ``want`` new trials while the study holds fewer than ``n_trials`` (under the lock)."""
        asked: list[tuple[int, dict]] = []
        while len(asked) < want and (number := len(study.get_trials(deepcopy=False))) < n_trials:
            study.sampler = self._sampler(space, number)
            trial = study.ask(space.distributions)
            trial.set_user_attr("sweep_dir", str(sweep_dir))
            trial.set_user_attr(WORKER_ATTR, worker.name)
            asked.append((trial.number, trial.params))
        return asked

    def _stale_trials(self, study, sweep_dir: Path, goals: dict[str, str], worker: Worker | None = None):
        """Trials a killed run of this sweep left RUNNING: told from their records, or launched
        again (by this worker: the trial is marked as its own, under the lock)."""
        from optuna.trial import TrialState

        again = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            mine = t.user_attrs.get("sweep_dir") == str(sweep_dir)
            if not mine or Worker.alive(sweep_dir, t.user_attrs.get(WORKER_ATTR)):
                continue  # another sweep's trial in a shared study, or one a live worker runs
            values = self._values(sweep_dir, t.number, goals)  # a damaged record: RecordError, one line
            if values is not None:
                study.tell(t.number, values)
            elif (rec := record.read(sweep_dir / str(t.number))) and rec.status is Status.PRUNED:
                study.tell(t.number, state=TrialState.PRUNED)
            else:
                if worker is not None:
                    study._storage.set_trial_user_attr(t._trial_id, WORKER_ATTR, worker.name)
                again.append((t.number, dict(t.params)))
        if again:
            log.info(f"Optuna: trials {[n for n, _ in again]} were left running by a stopped sweep; running them again")
        return again

    @staticmethod
    def _values(sweep_dir: Path, number: int, goals: dict[str, str]) -> list[float] | None:
        """Each objective's value in trial ``number``'s record, if it completed with all of them."""
        rec = record.read(sweep_dir / str(number))
        values = [rec.metric(k) for k in goals] if rec and rec.status is Status.COMPLETED else [math.nan]
        return values if all(math.isfinite(v) for v in values) else None

    def _tell(self, study, number: int, result, goals: dict[str, str], sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        from article_gpt.training.pruning import PRUNED_ATTR

        if len(goals) > 1:  # a job returns one value: the objectives come from its record
            try:
                values = self._values(sweep_dir, number, goals)
            except record.RecordError:
                values = None
        else:
            try:
                values = [float(result.return_value)]
            except Exception:  # the job raised: a failed trial, the search goes on
                values = [math.nan]
        (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if PRUNED_ATTR in frozen.user_attrs:
            study.tell(number, state=TrialState.PRUNED)
        elif values is not None and all(math.isfinite(v) for v in values):
            study.tell(number, values)
        else:
            study.tell(number, state=TrialState.FAIL)

    def _write_best(self, study, sweep_dir: Path, goals: dict[str, str], url: str) -> None:
        """``best_trial.yaml`` in the sweep dir: the best trial's number, value and parameters (with
        several objectives: the objectives and every Pareto-optimal trial)."""
        from optuna.trial import TrialState

        states = [t.state for t in study.get_trials(deepcopy=False)]
        counts = {s.name.lower(): states.count(s) for s in TrialState if states.count(s)}
        out: dict[str, Any] = {"study": study.study_name, "storage": url, "trials": counts}
        if len(goals) > 1:
            front = [{"number": t.number, "values": dict(zip(goals, t.values)), "params": t.params,
                      "job_dir": str(sweep_dir / str(t.number))} for t in study.best_trials]
            out.update(objectives=goals, pareto=front)
            log.info(f"Optuna: {len(front)} Pareto-optimal trials: {', '.join(str(t['number']) for t in front)}")
            OmegaConf.save(OmegaConf.create(out), sweep_dir / BEST_FILE)
            return
        ((metric, direction),) = goals.items()
        out.update(direction=direction, optimized_metric=metric)
        try:
            best = study.best_trial
            out["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "job_dir": str(sweep_dir / str(best.number))}
            params = " ".join(f"{k}={v}" for k, v in best.params.items())
            log.info(f"Optuna: best trial {best.number}: {metric}={best.value:.4f} ({params})")
        except ValueError:  # no trial completed
            out["best"] = None
            log.info("Optuna: no trial completed")
        OmegaConf.save(OmegaConf.create(out), sweep_dir / BEST_FILE)
