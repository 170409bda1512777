"""The command line: `python -m cxr train | evaluate | report | predict | make-synthetic | download | bench`, also
installed as the `cxr` console script (`cxr.cli.main:main`).

Each command is a thin reader of the library, in its own module: `train` (`cxr.cli.train`) prints the events of
`fit`, `evaluate` and `report` (`cxr.cli.evaluate`) interpret a checkpoint and write its model card, `predict`
(`cxr.cli.predict`) classifies images, `make-synthetic` and `download` (`cxr.cli.data`) make or fetch a dataset,
`bench` hands over to `cxr.bench.throughput`. This module only builds the parser and runs a command: bad input
(a `ValueError`, which `UserError` is) ends with one sentence on stderr and exit code 2; anything else is a bug
and ends with its traceback and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

from cxr.cli.common import EXIT_BAD_INPUT, EXIT_BUG
from cxr.cli.data import add_data_parsers
from cxr.cli.evaluate import add_evaluate_parsers
from cxr.cli.predict import add_predict_parser
from cxr.cli.train import add_train_parser

PROG = "python -m cxr"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Chest X-ray classification: the ResNet18 recipe.")
    sub = p.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_evaluate_parsers(sub)
    add_predict_parser(sub)
    add_data_parsers(sub)
    # The benchmark parses its own flags (main hands them over before this parser sees them).
    b = sub.add_parser("bench", help="measure training and inference speed side by side (see docs/cli.md)",
                       add_help=False)
    b.set_defaults(func=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (0, 1 for a bug, 2 for bad input, 130 when interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark has its own flags
        from cxr.bench.throughput import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad input (UserError is one): the library wrote a sentence for people
        if os.environ.get("CXR_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # a bug, or the machine (out of memory, disk full): the details matter
        traceback.print_exc()
        print(f"error: {type(e).__name__}: {e} (this is not a problem with your input; the details are above)",
              file=sys.stderr)
        return EXIT_BUG
