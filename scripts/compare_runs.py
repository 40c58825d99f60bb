"""Compare runs side by side: summary.csv, summary.md, comparison.png and the table on the console.

    python scripts/compare_runs.py outputs/sweeps/<id>                 # rebuild a sweep's report in place
    python scripts/compare_runs.py outputs/runs/<a> outputs/runs/<b>   # runs from different days
    python scripts/compare_runs.py outputs/sweeps/<id1> outputs/sweeps/<id2> --out /tmp/cmp

Each PATH is a run directory (holding metrics.json) or a folder of them (a sweep, outputs/runs).
Without --out, a single folder of runs gets the report in itself, like the end of a sweep does;
anything else goes to outputs/comparisons/<time>/ next to the runs, so nothing lands in the
current directory by surprise.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from article_gpt.errors import exit_on_user_error
from article_gpt.sweeps import records, summary

ROOT = Path(__file__).resolve().parents[1]


def default_out(paths: list[Path]) -> Path:
    if len(paths) == 1 and not records.is_run_dir(paths[0]):
        return paths[0]
    return ROOT / "outputs" / "comparisons" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run directories or folders of runs")
    parser.add_argument("--out", type=Path, help="where to write the report (default: see above)")
    parser.add_argument("--title", help="heading of summary.md and comparison.png")
    args = parser.parse_args(argv)

    with exit_on_user_error():
        runs = records.load_runs(args.paths)
        out = args.out or default_out(args.paths)
        one_sweep = len(args.paths) == 1 and (args.paths[0] / "multirun.yaml").is_file()
        title = args.title or (f"Sweep {args.paths[0].resolve().name}" if one_sweep else f"{len(runs)} runs compared")
        table = summary.write_report(runs, out, title)
    print(f"{table}\n\nreport: {out / 'summary.md'} (+ summary.csv, comparison.png)")
    if (note := summary.failure_line(runs)) is not None:
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
