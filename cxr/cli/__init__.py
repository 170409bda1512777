"""The command line, `python -m cxr COMMAND` (or the `cxr` console script). `main` builds the parser and maps bad
input to exit code 2; one module per command family: `train`, `evaluate` (evaluate, report), `predict`, `data`
(make-synthetic, download); `common` holds what they share, below them all; `reference` writes docs/cli.md from
the parsers."""
