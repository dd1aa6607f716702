"""``python -m keras_batch_score.pipelines.options --docs FILE.md``: regenerate its flag tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keras_batch_score.pipelines.options import docs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_batch_score.pipelines.options", description=__doc__
    )
    parser.add_argument(
        "--docs",
        nargs="+",
        metavar="FILE",
        required=True,
        help="Markdown files with <!-- flags:COMMAND --> ... <!-- /flags:COMMAND --> tables.",
    )
    args = parser.parse_args(argv)
    for path in args.docs:
        if docs.update(path):
            print(f"updated {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
