"""Experiment loggers: Weights & Biases (online or offline), CSV and TensorBoard.

W&B never prompts and never waits on a network it cannot reach: with ``mode: auto`` a run
goes online only when credentials exist (``WANDB_API_KEY`` or a netrc entry from
``wandb login``); otherwise, or when the online start fails, it runs offline and says how to
``wandb sync`` it. One ``wandb.init`` per job, always closed by ``finish``, so two jobs of a
sweep can never share a run.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from article_gpt.errors import ConfigError, describe


def wandb_credentials_present() -> bool:
    """True when W&B could authenticate without prompting. Reads, never prints, the key."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    """``auto`` -> ``WANDB_MODE`` if set, else online with credentials, else offline."""
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun", "run"):
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if wandb_credentials_present() else "offline"


def _init_wandb(mode: str, save_dir: Path, init_timeout: float, **kwargs: Any):
    import wandb

    settings = wandb.Settings(init_timeout=init_timeout, reinit="finish_previous", silent=True)
    if mode == "online":
        try:
            return wandb.init(mode="online", dir=save_dir, settings=settings, **kwargs)
        except Exception as err:  # unreachable server, bad key: fall back, never block the run
            print(f"W&B: online start failed ({describe(err)}); logging offline instead")
            mode = "offline"
    return wandb.init(mode=mode, dir=save_dir, settings=settings, **kwargs)


def build_loggers(
    logger_cfg: dict,
    save_dir: str | Path,
    group: str,
    name: str,
    config: dict,
    tags: list[str] | None = None,
    run_id: str | None = None,
) -> list[Logger]:
    """Loggers for the ``logger`` config group: a mapping with any of wandb / csv / tensorboard.
    ``run_id``: an earlier attempt's W&B run, continued (``resume="allow"``) by a resumed run."""
    save_dir = Path(save_dir)
    loggers: list[Logger] = []
    for kind, opts in (logger_cfg or {}).items():
        opts = dict(opts or {})
        if kind == "wandb":
            mode = resolve_wandb_mode(opts.get("mode", "auto"))
            if mode == "disabled":
                continue
            run = _init_wandb(
                mode,
                save_dir,
                float(opts.get("init_timeout", 30)),
                project=opts.get("project", "article-gpt"),
                entity=opts.get("entity"),
                group=group,
                name=name,
                job_type=opts.get("job_type", "train"),
                tags=list(tags or []),
                config=config,
                **({"id": run_id, "resume": "allow"} if run_id else {}),
            )
            loggers.append(WandbLogger(experiment=run, log_model=False))
            if run.settings.mode == "offline":
                print(f"W&B: offline run in {run_files(run)}; upload it with: wandb sync {run_files(run)}")
        elif kind == "csv":
            loggers.append(CSVLogger(save_dir, name="csv", version=""))
        elif kind == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir, name="tensorboard", version="", default_hp_metric=False))
        else:
            raise ConfigError(f"logger.{kind}: unknown logger (known: wandb, csv, tensorboard)")
    return loggers


def run_files(run) -> Path:
    """The folder holding one W&B run's files (``.../wandb/offline-run-*``): what ``wandb sync`` takes."""
    return Path(run.dir).parent


def wandb_run(loggers: list[Logger]):
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            return lg.experiment
    return None


def wandb_run_info(loggers: list[Logger]) -> dict:
    run = wandb_run(loggers)
    if run is None:
        return {}
    return {"wandb_run_id": run.id, "wandb_dir": str(run_files(run)), "wandb_mode": run.settings.mode}


def log_samples_table(loggers: list[Logger], samples: list[dict]) -> None:
    """All generated samples as one W&B Table (epoch, step, prompt, text)."""
    run = wandb_run(loggers)
    if run is None or not samples:
        return
    import wandb

    cols = ["epoch", "step", "prompt", "text"]
    run.log({"samples": wandb.Table(columns=cols, data=[[s[c] for c in cols] for s in samples])})


def finish_loggers(loggers: list[Logger], summary: dict, failed: bool) -> None:
    """Write the final summary and close every logger; a failed job's W&B run ends as failed."""
    run = wandb_run(loggers)
    if run is not None:
        for key, value in summary.items():
            if value is not None:
                run.summary[key] = value
        run.finish(exit_code=1 if failed else 0)
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            lg.finalize("failed" if failed else "success")
