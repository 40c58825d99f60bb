"""A saved W&B workspace view for one sweep, built from its run records (``wandb-workspaces``).

The view shows the sweep's runs only (filtered to its W&B group, the sweep id) and the panels a
sweep is compared with: val loss against step and against training FLOPs, a parallel-coordinates
panel over the swept keys ending in the best val loss, the best val loss against non-embedding
parameters, and a runs table with the swept columns, tokens/s and MFU.

Saving needs a W&B login and the server. Without them the same view is written as JSON: the
payload ``Workspace.save()`` would send (the library's own serialization, read back by it in the
tests), and the readable outline of its panels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from article_gpt.errors import ArticleGPTError
from article_gpt.runs import dirs, record
from article_gpt.runs.dirs import is_run_dir
from article_gpt.sweeps.records import Run, load_runs

SPEC_FILE = "wandb_workspace.json"
# Record keys the W&B summary carries (training/closing.py) that the panels and table read
LOSS, SIZE, SPEED, MFU = "best_val_loss", "params_non_embedding", "tokens_per_sec", "mfu"


class WorkspaceError(ArticleGPTError):
    """What a workspace cannot be built from (no runs of that sweep, no wandb-workspaces)."""


@dataclass
class SweepView:
    """What the view is of: one W&B group of one project, and the keys its jobs swept."""

    project: str
    entity: str | None  # None: the logged-in user's default entity, asked when saving
    group: str  # the sweep id: every job's W&B group
    swept: list[str]  # full dotted config keys, e.g. model.heads

    @property
    def name(self) -> str:
        return f"Sweep {self.group}"


def _wandb_settings(run: Run) -> dict:
    config = run.run_dir / dirs.CONFIG
    wandb = OmegaConf.select(OmegaConf.load(config), "logger.wandb") if config.is_file() else None
    return OmegaConf.to_container(wandb) if wandb is not None else {}


def sweep_view(runs: list[Run]) -> SweepView:
    """The view of ``runs``: one sweep's jobs (one W&B group), logged to W&B."""
    groups = {r.metrics.get("group") for r in runs if r.metrics}
    if len(groups) != 1 or None in groups:
        raise WorkspaceError(f"these runs are not one sweep: their W&B groups are {sorted(map(str, groups))}")
    settings = [_wandb_settings(r) for r in runs]
    if not any(settings):
        raise WorkspaceError(f"sweep {next(iter(groups))} logged nothing to W&B (logger.wandb was not set)")
    first = next(s for s in settings if s)
    swept = list(dict.fromkeys(k for r in runs for k in r.swept_keys.values()))
    return SweepView(first.get("project") or "article-gpt", first.get("entity"), next(iter(groups)), swept)


def find_sweep(target: str, outputs: Path) -> list[Run]:
    """The runs of ``target``: a sweep folder (or run folders), or a W&B group / sweep id whose
    runs are under ``outputs`` (their records name the group)."""
    path = Path(target)
    if path.is_dir():
        return load_runs([path])
    if not outputs.is_dir():
        raise WorkspaceError(f"{target}: neither a folder nor a sweep id with runs under {outputs}")
    # only each record's group is read to find them; the runs are then loaded (and labelled) once
    found = [run for pattern in dirs.RUN_GLOBS for run in sorted(outputs.glob(pattern))
             if is_run_dir(run) and (rec := record.read(run)) is not None and rec.group == target]
    if not found:
        raise WorkspaceError(f"{target}: no folder of that name, and no run under {outputs} has it as its W&B group")
    return load_runs(found)


def build_workspace(view: SweepView, entity: str):
    """The ``wandb_workspaces`` Workspace for ``view``, saved under ``entity``."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
        from wandb_workspaces import expr
    except ImportError:
        raise WorkspaceError('wandb-workspaces is not installed: pip install -e ".[dashboards]"') from None
    loss_by = [wr.LinePlot(title="val loss by step", x="Step", y=["val/loss"]),
               wr.LinePlot(title="val loss by training FLOPs", x="train/flops", y=["val/loss"])]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in view.swept]
    compare = [wr.ParallelCoordinatesPlot(title="swept keys -> best val loss",
                                          columns=[*columns, wr.ParallelCoordinatesPlotColumn(
                                              metric=wr.SummaryMetric(LOSS))]),
               wr.ScatterPlot(title="best val loss by non-embedding parameters", x=wr.SummaryMetric(SIZE),
                              y=wr.SummaryMetric(LOSS), log_x=True)]
    table = [*(f"config:{k}" for k in view.swept), f"summary:{LOSS}", f"summary:{SPEED}", f"summary:{MFU}"]
    return ws.Workspace(
        entity=entity, project=view.project, name=view.name,
        sections=[ws.Section(name="Compare the sweep", panels=compare, is_open=True),
                  ws.Section(name="Loss curves", panels=loss_by, is_open=True)],
        runset_settings=ws.RunsetSettings(filters=[expr.Metric("Group") == view.group], pinned_columns=table,
                                          order=[ws.Ordering(expr.Summary(LOSS), ascending=True)]),
    )


def outline(workspace) -> dict[str, Any]:
    """The view in words: what a reader (and the tests) check, read off the Workspace itself."""
    def name(m: Any) -> str:
        return m if isinstance(m, str) else f"{type(m).__name__}:{m.name}"

    panels = []
    for section in workspace.sections:
        for p in section.panels:
            axes = {a: name(getattr(p, a)) for a in ("x", "y") if getattr(p, a, None) is not None
                    and not isinstance(getattr(p, a), list)}
            if isinstance(getattr(p, "y", None), list):
                axes["y"] = [name(m) for m in p.y]
            if hasattr(p, "columns"):
                axes["columns"] = [name(c.metric) for c in p.columns]
            panels.append({"section": section.name, "type": type(p).__name__, "title": p.title, **axes})
    filters = workspace.runset_settings.filters  # a string once the library has validated it
    return {"name": workspace.name, "entity": workspace.entity or None, "project": workspace.project,
            "filter": filters if isinstance(filters, str) else " and ".join(map(str, filters)), "panels": panels,
            "runs_table": list(workspace.runset_settings.pinned_columns)}


def write_spec(workspace, path: Path, apply_command: str) -> None:
    """The view as JSON: its outline, and the exact payload ``Workspace.save()`` would send."""
    view = workspace._to_model()  # what save() upserts; private in wandb-workspaces 0.4 (pinned)
    spec = {"outline": outline(workspace),
            "apply": f"once logged in to W&B (wandb login), save it with: {apply_command}",
            "wandb_view": view.model_dump(mode="json", by_alias=True, exclude_none=True)}
    path.write_text(json.dumps(spec, indent=2) + "\n")


def read_spec(path: Path):
    """The Workspace a written spec holds, read back by wandb-workspaces itself."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.workspaces import internal

    return ws.Workspace._from_model(internal.View.model_validate(json.loads(path.read_text())["wandb_view"]))
