"""The command-line reference, docs/cli.md, written from the argparse parsers themselves: `python -m
cxr.cli.reference` rewrites it, `render()` returns what it would write, and a test fails when the committed file
differs, so the reference cannot drift from the flags. Each command's `--help`, at a fixed width, under a heading.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
WIDTH = 110  # a fixed width, so the file does not depend on the terminal that wrote it


def _fixed_width(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = functools.partial(argparse.HelpFormatter, width=WIDTH)
    return parser


def sections() -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(command line, one-line summary, parser) for the top level, each command and each benchmark."""
    from cxr.bench import speedrun, throughput
    from cxr.cli.main import PROG, build_parser

    top = build_parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    summary = {a.dest: a.help or "" for a in commands._choices_actions}
    out = [(PROG, top.description or "", top)]
    for name, parser in commands.choices.items():
        if name == "bench":  # its flags are its own parser's (main hands them over)
            out.append((f"{PROG} bench", summary[name], throughput.build_parser()))
            out.append((f"{PROG} bench --time-to", "measure time to accuracy instead", speedrun.build_parser()))
        else:
            out.append((f"{PROG} {name}", summary[name], parser))
    return out


def render() -> str:
    """docs/cli.md as the parsers describe the commands now."""
    lines = ["# Command-line reference", "",
             "Written by `python -m cxr.cli.reference` from the commands' own `--help`; edit the parsers, not this "
             "file (a test checks the two agree). The `cxr` console script takes the same commands as "
             "`python -m cxr`. Bad input ends with one sentence on stderr and exit code 2; a bug ends with its "
             "traceback and exit code 1.", ""]
    for title, summary, parser in sections():
        lines += [f"## `{title}`", "", summary[:1].upper() + summary[1:] + ("" if summary.endswith(".") else "."), "",
                  "```text", _fixed_width(parser).format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md (or the path given) and say where."""
    path = Path(argv[0]) if argv else DOC
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
