"""A saved W&B workspace view for one sweep: its runs, the panels to compare them, a runs table.

    python scripts/wandb_workspace.py outputs/sweeps/<id>     # a sweep folder
    python scripts/wandb_workspace.py <sweep id>              # a W&B group (sweep id) with runs under outputs/

Logged in to W&B (WANDB_API_KEY or `wandb login`), it saves the view and prints its URL. Without
a login or a server it writes the view it would save to <sweep>/wandb_workspace.json and says how
to save it later. Needs the dashboards extra: pip install -e ".[dashboards]".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from article_gpt.errors import exit_on_user_error
from article_gpt.sweeps import workspace
from article_gpt.tracking.loggers import resolve_wandb_mode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep folder, or a W&B group / sweep id with runs under --outputs")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="where runs of a sweep id are")
    parser.add_argument("--entity", help="the W&B entity to save under (default: the run config's, else yours)")
    args = parser.parse_args(argv)

    with exit_on_user_error():
        runs = workspace.find_sweep(args.sweep, args.outputs)
        view = workspace.sweep_view(runs)
        folder = Path(os.path.commonpath([r.run_dir.resolve() for r in runs]))
        folder = folder.parent if len(runs) == 1 else folder
        spec_file = folder / workspace.SPEC_FILE
        entity = args.entity or view.entity
        if resolve_wandb_mode("auto") != "online":
            ws = workspace.build_workspace(view, entity or "")
            workspace.write_spec(ws, spec_file, " ".join(["python", *sys.argv]))
            print(f"W&B is offline here (no login): wrote the view for group {view.group} to {spec_file}\n"
                  f"once logged in (wandb login), run the same command again to save it")
            return 0
        import wandb

        ws = workspace.build_workspace(view, entity or wandb.Api().default_entity)
        workspace.write_spec(ws, spec_file, " ".join(["python", *sys.argv]))
        ws.save()
        print(f"saved the W&B view {view.name!r}: {ws.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
