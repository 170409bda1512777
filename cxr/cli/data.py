"""The data commands: `make-synthetic` writes a small synthetic dataset in the Kaggle layout (to try everything
without the real X-rays), `download` fetches the COVID-19 Radiography Database from Kaggle.
"""

from __future__ import annotations

import argparse

from cxr.cli.common import output_folder
from cxr.data.index import parse_classes


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from cxr.data.synthetic import make_synthetic

    classes = parse_classes(args.classes) if args.classes else None
    output_folder(args.dir, "", "the dataset")
    root = make_synthetic(args.dir, per_class=args.per_class, size=args.size, seed=args.seed, classes=classes)
    print(f"wrote a synthetic dataset ({args.per_class} images per class, {args.size} px) to {root}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from cxr.data.download import download_dataset

    output_folder(args.dest, "--dest", "the dataset")
    path = download_dataset(args.dest)
    print(f"dataset ready at {path}; train with: python -m cxr train --data '{path}'")
    return 0


def add_data_parsers(sub: "argparse._SubParsersAction") -> None:
    """The `make-synthetic` and `download` sub-commands and their flags."""
    m = sub.add_parser("make-synthetic", help="write a small synthetic dataset in the Kaggle layout")
    m.add_argument("dir")
    m.add_argument("--per-class", type=int, default=60)
    m.add_argument("--size", type=int, default=256)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--classes", help="subset of covid,normal,viral,lung_opacity (default: all four)")
    m.set_defaults(func=cmd_make_synthetic)

    d = sub.add_parser("download", help="fetch the COVID-19 Radiography Database from Kaggle")
    d.add_argument("--dest", default="data")
    d.set_defaults(func=cmd_download)
