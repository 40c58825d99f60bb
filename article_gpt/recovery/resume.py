"""Continue a run where it stopped. One rule for every job that starts in a directory that
already holds a run, whether it got there by ``python train.py resume=<run dir>``, by a
scheduler requeueing a preempted job with its same overrides, or by a sweep re-run into its
old sweep directory (``hydra.sweep.dir=<dir>`` or ``resume_sweep=<dir>``):

- ``status: completed`` (or ``pruned``): a sweep job is skipped (its recorded metric is
  returned, its files untouched); a single run refuses, unless ``resume=`` raises a budget key;
- ``status: interrupted``, or a ``checkpoints/last.ckpt`` without metrics.json (killed hard):
  the run resumes from that checkpoint, in the same directory, as the same W&B run;
- ``status: failed``: the run starts again from scratch; the failed attempt's files move to
  ``attempt-<n>/``, so nothing is lost.

``resume=`` is turned into ordinary Hydra overrides before Hydra starts (:func:`rewrite_argv`):
the run's own recorded overrides, plus budget keys, plus ``hydra.run.dir=<run dir>``. Anything
else is refused with one line, because a resumed run must be the same run. No torch here: this
runs before anything heavy is imported.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from article_gpt.errors import ConfigError

CHECKPOINT = Path("checkpoints") / "last.ckpt"  # the resumable checkpoint: last validation or the interruption
BUDGET_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")
BUDGET_PREFIX = "budget."
FINISHED = ("completed", "pruned")
ATTEMPT_FILES = ("metrics.json", "error.log", "checkpoints", "samples.txt", "loss.png", "wandb", "csv", "tensorboard")


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_budget_key(key: str) -> bool:
    return key in BUDGET_KEYS or key.startswith(BUDGET_PREFIX)


def read_metrics(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "overrides.yaml").is_file()


def latest_run(log_dir: Path) -> Path:
    """The run or sweep job under ``log_dir`` that wrote last (its metrics.json or checkpoint)."""
    best: tuple[float, Path] | None = None
    for pattern in ("runs/*", "sweeps/*/*"):
        for run in log_dir.glob(pattern):
            marks = [p.stat().st_mtime for p in (run / "metrics.json", run / CHECKPOINT) if p.exists()]
            if marks and is_run_dir(run) and (best is None or max(marks) > best[0]):
                best = (max(marks), run)
    if best is None:
        raise ConfigError(f"resume=latest: no run with metrics.json or {CHECKPOINT} under {log_dir}; "
                          "pass resume=<run dir>")
    return best[1]


def _hydra_value(text: str) -> str:
    """A path as one Hydra override value (quoted unless plainly safe)."""
    if re.fullmatch(r"[\w/.\-:~+@]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _read_overrides(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


def _log_dir(args: list[str]) -> Path:
    for a in args:
        if override_key(a) == "paths.log_dir":
            return Path(a.split("=", 1)[1]).expanduser()
    import os

    return Path(os.environ.get("ARTICLE_GPT_ROOT", ".")) / "outputs"


def rewrite_argv(argv: list[str]) -> list[str]:
    """``resume=<dir>`` / ``resume_sweep=<dir>`` -> the overrides that recompose that run or sweep."""
    args = argv[1:]
    keys = [override_key(a) for a in args]
    if "resume" in keys:
        return [argv[0], *_resume_run_args(args)]
    if "resume_sweep" in keys:
        return [argv[0], *_resume_sweep_args(args)]
    return argv


def _resume_run_args(args: list[str]) -> list[str]:
    spec = next(a for a in args if override_key(a) == "resume").split("=", 1)[1]
    flags = [a for a in args if a.startswith("-")]
    if "-m" in flags or "--multirun" in flags:
        raise ConfigError(f"resume={spec}: resumes one run; for a sweep use resume_sweep=<sweep dir>")
    given = [a for a in args if not a.startswith("-") and override_key(a) != "resume"]
    # Hydra's own settings pass through (a DDP rank started by rank 0 names the run dir again)
    hydra = [a for a in given if override_key(a).startswith("hydra.") and override_key(a) != "hydra.run.dir"]
    given = [a for a in given if not override_key(a).startswith("hydra.")]
    run_dir = latest_run(_log_dir(given)) if spec == "latest" else Path(spec).expanduser()
    if not is_run_dir(run_dir):
        raise ConfigError(f"resume={spec}: not a run directory (no .hydra/overrides.yaml); "
                          "pass a folder under outputs/runs/ or outputs/sweeps/<id>/, or resume=latest")
    run_dir = run_dir.resolve()
    stored = _read_overrides(run_dir / ".hydra" / "overrides.yaml")
    budget = [a for a in given if is_budget_key(override_key(a))]
    for a in given:
        if a not in budget and a not in stored:
            raise ConfigError(f"{a}: resume= continues the run with its own config; only {', '.join(BUDGET_KEYS)} "
                              f"and budget.* may change (start a new run to change {override_key(a)})")
    metrics = read_metrics(run_dir) or {}
    if metrics.get("status") in FINISHED and not budget:
        raise ConfigError(f"resume={spec}: {run_dir} already {metrics['status']} at step {metrics.get('steps')}; "
                          "raise trainer.max_steps, trainer.max_epochs or budget.* to train it further")
    replaced = {override_key(a) for a in budget}
    kept = [o for o in stored if override_key(o) not in replaced | {"resume", "resume_sweep"}]
    where = _hydra_value(str(run_dir))
    return [*flags, *kept, *budget, *hydra, f"hydra.run.dir={where}", f"resume={where}"]


def _resume_sweep_args(args: list[str]) -> list[str]:
    from omegaconf import OmegaConf

    spec = next(a for a in args if override_key(a) == "resume_sweep").split("=", 1)[1]
    sweep_dir = Path(spec).expanduser()
    record = sweep_dir / "multirun.yaml"
    if not record.is_file():
        raise ConfigError(f"resume_sweep={spec}: not a sweep directory (no multirun.yaml)")
    overrides = OmegaConf.load(record).hydra.overrides
    hydra = [str(o) for o in overrides.hydra if override_key(str(o)) not in ("hydra.sweep.dir", "hydra.mode")]
    task = [str(o) for o in overrides.task]
    given = [a for a in args if not a.startswith("-") and override_key(a) != "resume_sweep"]
    for a in given:
        if a not in task and a not in hydra:
            raise ConfigError(f"{a}: resume_sweep= re-runs the sweep exactly as it was recorded "
                              f"({' '.join(task)}); start a new sweep to change it")
    return ["-m", *hydra, *task, f"hydra.sweep.dir={_hydra_value(str(sweep_dir.resolve()))}"]


@dataclass
class Start:
    """How a job begins in its directory (the rule in the module doc)."""

    action: str  # fresh | resume | rerun | skip
    checkpoint: Path | None = None
    previous: dict = field(default_factory=dict)  # the earlier attempt's metrics.json
    wandb_id: str | None = None

    def record(self, resumed_from_step: int | None) -> dict:
        """metrics.json keys that keep the run's history across resumes and attempts."""
        history = list(self.previous.get("resumes") or [])
        if self.action == "resume":
            history.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "from_step": resumed_from_step or 0,
                            "checkpoint": str(self.checkpoint) if self.checkpoint else None})
        out: dict = {"resumes": history}
        if self.action == "rerun":
            out["attempts"] = self.previous.get("attempts", 1) + 1
        elif "attempts" in self.previous:
            out["attempts"] = self.previous["attempts"]
        return out


def wandb_run_id(run_dir: Path, metrics: dict | None) -> str | None:
    """The W&B run id of an earlier attempt: from metrics.json, else from the run's files."""
    if metrics and metrics.get("wandb_run_id"):
        return str(metrics["wandb_run_id"])
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def plan(run_dir: Path) -> Start:
    """The rule, read from ``run_dir``'s metrics.json and checkpoint."""
    metrics = read_metrics(run_dir)
    ckpt = run_dir / CHECKPOINT
    status = (metrics or {}).get("status")
    if status in FINISHED:
        return Start("skip", ckpt if ckpt.is_file() else None, metrics or {}, wandb_run_id(run_dir, metrics))
    if status == "failed":
        return Start("rerun", None, metrics or {})
    if status == "interrupted" or ckpt.is_file():
        return Start("resume", ckpt if ckpt.is_file() else None, metrics or {}, wandb_run_id(run_dir, metrics))
    return Start("fresh")


def check_checkpoint(start: Start, model: dict, run_dir: Path, multirun: bool) -> Start:
    """The checkpoint to resume from must hold this job's model: a job killed before it wrote
    metrics.json (so before its overrides were recorded) may have been another job's. A sweep
    job then starts afresh (the old files kept in attempt-<n>/); a single run refuses."""
    if start.checkpoint is None:
        return start
    import torch

    try:  # mmap: only the small hyper_parameters are read now, the weights when Lightning loads
        saved = torch.load(start.checkpoint, map_location="cpu", weights_only=True, mmap=True)
        saved = (saved.get("hyper_parameters") or {}).get("model")
    except Exception:
        return start  # unreadable: Lightning's load reports it in one line
    if saved is None or saved == model:
        return start
    differ = sorted(k for k in set(saved) | set(model) if saved.get(k) != model.get(k))
    what = ", ".join(f"model.{k}={saved.get(k)} there, {model.get(k)} here" for k in differ[:3])
    if not multirun:
        raise ConfigError(f"{start.checkpoint}: holds another model ({what}); resume it with its own config")
    from article_gpt.parallel.ddp import is_rank_zero

    if is_rank_zero():
        dest = archive_attempt(run_dir)
        print(f"{run_dir}: its checkpoint holds another model ({what}); starting afresh, old files in {dest.name}/",
              flush=True)
    return Start("fresh")


def archive_attempt(run_dir: Path) -> Path:
    """Move a failed attempt's files into ``attempt-<n>/`` (n = 1, 2, ...)."""
    n = 1 + len(list(run_dir.glob("attempt-*")))
    dest = run_dir / f"attempt-{n}"
    dest.mkdir()
    for name in ATTEMPT_FILES:
        if (run_dir / name).exists():
            shutil.move(str(run_dir / name), str(dest / name))
    return dest


def begin(run_dir: Path, resume: str | None, multirun: bool, overrides: list[str],
          optimized_metric: str) -> Start | float:
    """Apply the rule to this job: a :class:`Start`, or for a skipped sweep job the value to return.

    A single run refuses a finished directory in one line (ConfigError) unless ``resume=`` named it.
    """
    start = plan(run_dir)
    previous = start.previous.get("overrides")
    changed = [o for o in overrides if previous is not None and o not in previous
               and not is_budget_key(override_key(o)) and override_key(o) not in ("resume", "resume_sweep")]
    if start.action in ("skip", "resume") and changed:
        refusal = ConfigError(f"{changed[0]}: {run_dir} holds a run of other overrides ({' '.join(previous)}); "
                              "refusing to mix them")
        if not multirun:
            raise refusal
        print(f"error: {refusal}", file=sys.stderr, flush=True)
        return math.nan
    if start.action == "skip":
        if resume:  # resume= with a raised budget: the finished run trains on from its last checkpoint
            return Start("resume", start.checkpoint, start.previous, start.wandb_id)
        if not multirun:
            raise ConfigError(f"{run_dir}: already holds a finished run; refusing to overwrite it")
        value = start.previous.get(optimized_metric or "val_loss")
        print(f"{run_dir}: already {start.previous.get('status')}; skipped (files untouched)", flush=True)
        return float(value) if isinstance(value, (int, float)) else math.nan
    from article_gpt.parallel.ddp import is_rank_zero

    if not is_rank_zero():  # DDP ranks started by rank 0 follow its decision, they do not act on it
        return start
    if start.action == "rerun":
        dest = archive_attempt(run_dir)
        print(f"{run_dir}: the previous attempt failed ({start.previous.get('error')}); "
              f"running it again, its files kept in {dest.name}/", flush=True)
    elif start.action == "resume":
        where = start.checkpoint or "the start (it stopped before its first checkpoint)"
        print(f"{run_dir}: resuming from {where}", flush=True)
    return start
