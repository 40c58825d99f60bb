"""Import your Medium stories: one clean .txt per story, ready to train on.

    python scripts/import_medium.py medium-export.zip --out data/my_articles/
    python train.py data=medium data.train.path=data/my_articles

The input is the .zip from Medium's "Download your information" (or the folder it unpacks
to). Drafts and responses are skipped unless asked for; a report lists every story imported
or skipped with its word count. The extraction itself is article_gpt/data/medium.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from article_gpt.data.medium import import_medium
from article_gpt.errors import exit_on_user_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path, help="Medium's export .zip, or the folder it unpacks to")
    parser.add_argument("--out", type=Path, required=True, help="folder for the .txt files (created if missing)")
    parser.add_argument("--include-drafts", action="store_true", help="also import drafts (draft_*.html)")
    parser.add_argument("--include-responses", action="store_true", help="also import responses to other stories")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        report = import_medium(args.archive, args.out, args.include_drafts, args.include_responses)
    print("\n".join(report.lines(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
