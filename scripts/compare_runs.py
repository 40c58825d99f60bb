"""Compare runs side by side: summary.csv, summary.md, comparison.png and the table on the console.

    python scripts/compare_runs.py outputs/sweeps/<id>                 # rebuild a sweep's report in place
    python scripts/compare_runs.py outputs/runs/<a> outputs/runs/<b>   # runs from different days
    python scripts/compare_runs.py outputs/sweeps/<id1> outputs/sweeps/<id2> --out /tmp/cmp

Each PATH is a run directory (holding metrics.json) or a folder of them (a sweep, outputs/runs).
Runs of several sizes and compute also get scaling.json, scaling.md and scaling.png (docs/scaling.md).
Without --out, a single folder of runs gets the report in itself, like the end of a sweep does;
anything else goes next to the runs, into comparisons/<time>-<uid>/ in the folder that holds them
all (outputs/runs/comparisons/... for two runs), so nothing lands in the current directory by
surprise and two comparisons, even in the same second, never share a folder.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path

from article_gpt.config.rules import SCALING_PARAMS
from article_gpt.errors import exit_on_user_error
from article_gpt.runs.dirs import is_run_dir
from article_gpt.sweeps import records, scaling_report, summary


def default_out(paths: list[Path]) -> Path:
    """A lone folder of runs itself; else a new comparisons/<time>-<uid> in the runs' common folder."""
    if len(paths) == 1 and not is_run_dir(paths[0]):
        return paths[0]
    common = Path(os.path.commonpath([p.resolve() for p in paths]))
    if is_run_dir(common):  # one run, or runs inside runs: beside it, never inside a run
        common = common.parent
    while True:
        out = common / "comparisons" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}-{secrets.token_hex(3)}"
        try:
            out.mkdir(parents=True)  # exist_ok=False: a folder no other comparison has
            return out
        except FileExistsError:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run directories or folders of runs")
    parser.add_argument("--out", type=Path, help="where to write the report (default: see above)")
    parser.add_argument("--title", help="heading of summary.md and comparison.png")
    parser.add_argument("--predict-flops", type=float, metavar="FLOPS",
                        help="runs of several sizes and compute: the scaling fit's best N, D and loss for this budget")
    parser.add_argument("--params", choices=SCALING_PARAMS, help="the scaling fit's N (default: non_embedding)")
    args = parser.parse_args(argv)

    with exit_on_user_error():
        fit_opts = scaling_report.settings({"predict_flops": args.predict_flops, "params": args.params})
        runs = records.load_runs(args.paths)
        out = args.out or default_out(args.paths)
        one_sweep = len(args.paths) == 1 and (args.paths[0] / "multirun.yaml").is_file()
        title = args.title or (f"Sweep {args.paths[0].resolve().name}" if one_sweep else f"{len(runs)} runs compared")
        table = summary.write_report(runs, out, title)
        scaled = scaling_report.write(runs, out, title, fit_opts)
    print(f"{table}\n\nreport: {out / 'summary.md'} (+ summary.csv, comparison.png"
          f"{', scaling.md, scaling.json, scaling.png' if scaled else ''})")
    if (note := summary.failure_line(runs)) is not None:
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
