"""``resume=<run dir>|latest`` and ``resume_sweep=<sweep dir>``, turned into ordinary Hydra
overrides before Hydra starts: the run's own recorded overrides, plus limit keys (how far it
trains: the budget and early stopping's patience), plus ``hydra.run.dir=<run dir>`` (a sweep:
its recorded command line and ``hydra.sweep.dir``). Anything else is refused with one line,
because a resumed run must be the same run; so is a finished run's resume that leaves the limit
that ended it (its record's ``end``) as it was, which would train nothing. What the job then
does in its directory is the start rule (recovery/resume.py). No torch here: this runs before
anything heavy is imported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from article_gpt.errors import ConfigError
from article_gpt.runs import dirs

# how far a run trains: what a resume may change, so a finished run can train further
LIMIT_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "callbacks.early_stopping.patience")
BUDGET_PREFIX = "budget."
LIMITS = f"{', '.join(LIMIT_KEYS)} and {BUDGET_PREFIX}*"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_limit_key(key: str) -> bool:
    return key in LIMIT_KEYS or key.startswith(BUDGET_PREFIX)


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


def _limit_reached(done) -> str | None:
    """The limit key (or ``budget.``) that ended a finished run, as its record's ``end`` says: a
    resume that leaves it as it was would train nothing. None where another cause ended it."""
    by = ((done.end if done is not None else None) or {}).get("by")
    return BUDGET_PREFIX if by == "budget" else f"trainer.{by}" if f"trainer.{by}" in LIMIT_KEYS else None


def _already_reached(limits: list[str], done) -> str | None:
    """The first given limit that a finished run has already reached (a resume would train
    nothing and only rewrite its record), as ``key=value``; None where each leaves room."""
    reached = {"trainer.max_steps": done.steps, "budget.tokens": done.tokens_seen, "budget.flops": done.train_flops}
    for a in limits:
        key, _, value = a.partition("=")
        try:
            limit = float(value)
        except ValueError:
            continue
        if reached.get(key) is not None and 0 < limit <= reached[key]:
            return f"{a}: the run already reached {reached[key]:g}"
    return None


def _resume_run_args(args: list[str]) -> list[str]:
    spec = next(a for a in args if override_key(a) == "resume").split("=", 1)[1]
    flags = [a for a in args if a.startswith("-")]
    if "-m" in flags or "--multirun" in flags:
        raise ConfigError(f"resume={spec}: resumes one run; for a sweep use resume_sweep=<sweep dir>")
    given = [a for a in args if not a.startswith("-") and override_key(a) != "resume"]
    # Hydra's own settings pass through (a DDP rank started by rank 0 names the run dir again)
    hydra = [a for a in given if override_key(a).startswith("hydra.") and override_key(a) != "hydra.run.dir"]
    given = [a for a in given if not override_key(a).startswith("hydra.")]
    run_dir = dirs.latest_resumable(_log_dir(given)) if spec == "latest" else Path(spec).expanduser()
    if not (run_dir / dirs.OVERRIDES).is_file():
        raise ConfigError(f"resume={spec}: not a run directory (no {dirs.OVERRIDES}); "
                          "pass a folder under outputs/runs/ or outputs/sweeps/<id>/, or resume=latest")
    run_dir = run_dir.resolve()
    stored = _read_overrides(run_dir / dirs.OVERRIDES)
    limits = [a for a in given if is_limit_key(override_key(a))]
    for a in given:
        if a not in limits and a not in stored:
            raise ConfigError(f"{a}: resume= continues the run with its own config; only {LIMITS} "
                              f"may change (start a new run to change {override_key(a)})")
    done = dirs.finished_record(run_dir)
    ended = _limit_reached(done)
    if done is not None and not any(override_key(a).startswith(ended or "") for a in limits):
        raise ConfigError(f"resume={spec}: {run_dir} already {done.status} at step {done.steps}; raise "
                          + (f"{ended}{'*' if ended == BUDGET_PREFIX else ''}, which ended it," if ended
                             else LIMITS.replace(" and ", " or ")) + " to train it further")
    if done is not None and (short := _already_reached(limits, done)):
        raise ConfigError(f"{short}; give more to train {run_dir} further")
    replaced = {override_key(a) for a in limits}
    kept = [o for o in stored if override_key(o) not in replaced | {"resume", "resume_sweep"}]
    where = _hydra_value(str(run_dir))
    return [*flags, *kept, *limits, *hydra, f"hydra.run.dir={where}", f"resume={where}"]


def _resume_sweep_args(args: list[str]) -> list[str]:
    from omegaconf import OmegaConf

    spec = next(a for a in args if override_key(a) == "resume_sweep").split("=", 1)[1]
    sweep_dir = Path(spec).expanduser()
    recorded = sweep_dir / dirs.MULTIRUN
    if not recorded.is_file():
        raise ConfigError(f"resume_sweep={spec}: not a sweep directory (no {dirs.MULTIRUN})")
    overrides = OmegaConf.load(recorded).hydra.overrides
    hydra = [str(o) for o in overrides.hydra if override_key(str(o)) not in ("hydra.sweep.dir", "hydra.mode")]
    task = [str(o) for o in overrides.task]
    given = [a for a in args if not a.startswith("-") and override_key(a) != "resume_sweep"]
    for a in given:
        if a not in task and a not in hydra:
            raise ConfigError(f"{a}: resume_sweep= re-runs the sweep exactly as it was recorded "
                              f"({' '.join(task)}); start a new sweep to change it")
    return ["-m", *hydra, *task, f"hydra.sweep.dir={_hydra_value(str(sweep_dir.resolve()))}"]
