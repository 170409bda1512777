"""The command line: `python -m cxr train | evaluate | report | predict | make-synthetic | download | bench`.

Each command is a thin reader of the library: `train` prints the events of `fit` (a progress bar, or JSON lines
with --json), `evaluate` interprets a checkpoint once over a folder (`cxr.explain.interpret`), `report` writes its model
card (`cxr.explain.report`), `predict` classifies images with `Classifier`. `train` lives in `cxr.cli.train`: its flags are
made from `TrainConfig` itself, so a new setting needs no edit there. Bad input
(a `ValueError`, which `UserError` is) ends with one sentence on stderr and exit code 2; anything else is a bug and
ends with its traceback and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from cxr.cli.train import add_train_parser
from cxr.data.index import display_name, parse_classes
from cxr.errors import UserError
from cxr.train.evaluate import format_report

EXIT_BAD_INPUT = 2
EXIT_BUG = 1
CliError = UserError  # kept for callers of the first round


def existing_folder(path: str, flag: str) -> Path:
    p = Path(path).expanduser()
    if p.is_file():
        raise UserError(f"{flag} {path} is a file; give the folder that holds the class folders")
    if not p.is_dir():
        raise UserError(f"{flag} {path} does not exist")
    return p


def print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# -------------------------------------------------------------------------------------------- evaluate, report
TOP_LOSSES = 10  # the most confidently wrong images `evaluate` lists


def _checkpoint_file(path: str) -> None:
    if Path(path).is_dir():
        raise UserError(f"--checkpoint {path} is a folder; name the checkpoint file (.pt) inside it")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cxr.train.checkpoint import load_checkpoint
    from cxr.data.index import index_dataset
    from cxr.explain.focus import lung_focus_report, lung_focus_words
    from cxr.explain.interpret import cache_for, interpret_as_trained, rebuild_test_set
    from cxr.train.run import resolve_device

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    _checkpoint_file(args.checkpoint)
    existing_folder(args.data, "--data")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    notes: tuple[str, ...] = ()
    if args.split == "test":  # the checkpoint's own test images: by their saved names, else rebuilt from its seed
        index, split, cache = rebuild_test_set(ckpt, args.data)
        ids, what, notes = list(split.test), "test images of this checkpoint's split", split.notes
    else:
        index = index_dataset(args.data, ckpt.classes)
        cache, ids, what = cache_for(ckpt, index), list(range(len(index.files))), "images (all of them)"
    ignored = sorted(set(p.name for p in index.root.iterdir() if p.is_dir() and not p.name.startswith("."))
                     - set(p.name for p in index.class_dirs))
    # One pass of the model: every view (report, top losses, ROC AUC) derives from the same probabilities.
    interp = interpret_as_trained(ckpt, cache, ids, index.labels, args.batch_size, device)
    report = {**interp.report, "loss": float(interp.losses.mean()), "roc_auc": interp.roc_auc(),
              "top_losses": [r.to_dict() for r in interp.top_losses(TOP_LOSSES)],
              "skipped_files": [index.files[i].name for i in cache.bad], "ignored_folders": ignored,
              "lung_focus": lung_focus_report(ckpt, index, ids, args.batch_size, device), "split": args.split,
              "notes": list(notes)}
    if args.json:
        print_json(report)
        return 0
    print(f"{len(ids)} {what} under {args.data}" + (f"; {cache.bad_report()}" if cache.bad else ""))
    for note in notes:
        print(f"note: {note}")
    if notes:
        print("note: --split all scores every image under --data instead")
    if ignored:
        print(f"note: this model knows {', '.join(ckpt.class_names)}; ignored the folders {', '.join(ignored)}")
    print(format_report(report))
    auc = ", ".join(f"{display_name(k)} {'n/a' if v is None else f'{v:.3f}'}" for k, v in report["roc_auc"].items())
    print(f"ROC AUC (one class against the rest): {auc}")
    print(lung_focus_words(report["lung_focus"]))
    wrong = [r for r in interp.top_losses(5) if r.true != r.predicted]
    if wrong:
        print("most confidently wrong:")
    for r in wrong:
        print(f"  {r.file}: true {display_name(r.true)}, called {display_name(r.predicted)} "
              f"(p={r.probability:.2f}, loss {r.loss:.2f})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cxr.explain.report import write_report
    from cxr.train.run import resolve_device

    _checkpoint_file(args.checkpoint)
    existing_folder(args.data, "--data")
    out = Path(args.out).expanduser()
    if out.is_file():
        raise UserError(f"--out {args.out} is a file; give a folder to write the report into")
    folder = write_report(args.checkpoint, args.data, out, include_weights=not args.no_weights,
                          device=resolve_device(args.device))
    print(f"wrote the report for {Path(args.checkpoint).name} to {folder}:")
    for f in sorted(folder.iterdir()):
        if f.is_file():
            print(f"  {f.name}")
    return 0


# --------------------------------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from cxr.explain.maps import overlay
    from cxr.predict import Classifier

    clf = Classifier(args.checkpoint)
    target = None
    if args.target is not None:  # a key ("viral") or the name the output prints ("Viral Pneumonia"), any case
        named = {n.casefold(): k for k in clf.classes for n in (k, display_name(k))}
        target = named.get(args.target.strip().casefold())
        if target is None:
            raise UserError(f"--target {args.target} is not a class of this checkpoint (one of "
                            f"{', '.join(f'{k} ({display_name(k)})' for k in clf.classes)})")
        if not args.cam_dir:
            print("note: --target chooses the class Grad-CAM explains; without --cam-dir no map is drawn",
                  file=sys.stderr)
    cam_dir = Path(args.cam_dir) if args.cam_dir else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    failed, times = 0, []
    for file in args.images:
        try:
            t0 = time.perf_counter()
            pred = clf.predict(file, explain=cam_dir is not None, target=target)
            times.append(time.perf_counter() - t0)
        except ValueError as e:
            failed += 1
            if args.json:
                print_json({"file": file, "error": str(e)})
            else:
                print(f"{file}: error: {e}", file=sys.stderr)
            continue
        out: dict[str, Any] = {"file": file, "label": pred.label, "probabilities": pred.probabilities,
                               "ms": round(times[-1] * 1000, 2)}
        if cam_dir is not None:
            cam_path = cam_dir / f"{Path(file).stem}_gradcam_{pred.target}.png"
            Image.fromarray(overlay(pred.image, pred.heatmap, args.alpha, args.colormap)).save(cam_path)
            out["cam"] = str(cam_path)
        if args.json:
            print_json(out)
        else:
            probs = "  ".join(f"{display_name(k)} {v:.1%}" for k, v in pred.probabilities.items())
            print(f"{file}: {display_name(pred.label)}   ({probs})" + (f"   cam: {out['cam']}" if cam_dir else ""))
    if times:  # on stderr, so --json output stays one object per image
        from cxr.bench.measure import p50_p95

        lat, work = p50_p95([t * 1000 for t in times]), "read + predict" + (" + Grad-CAM" if cam_dir else "")
        print(f"{len(times)} images on {clf.device}: {work} {lat['p50_ms']:.1f} ms p50, {lat['p95_ms']:.1f} ms p95 "
              "per image (the first includes warm-up)", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0  # an unreadable image is bad input, not a bug


# ------------------------------------------------------------------------------------- make-synthetic, download
def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from cxr.data.synthetic import make_synthetic

    classes = parse_classes(args.classes) if args.classes else None
    root = make_synthetic(args.dir, per_class=args.per_class, size=args.size, seed=args.seed, classes=classes)
    print(f"wrote a synthetic dataset ({args.per_class} images per class, {args.size} px) to {root}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from cxr.data.download import download_dataset

    path = download_dataset(args.dest)
    print(f"dataset ready at {path}; train with: python -m cxr train --data '{path}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cxr", description="Chest X-ray classification: the ResNet18 recipe.")
    sub = p.add_subparsers(dest="command", required=True)

    add_train_parser(sub)

    e = sub.add_parser("evaluate", help="score a checkpoint on its own test images (or every image under a folder)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", choices=("test", "all"), default="test",
                   help="test (default): only the checkpoint's own test images, which it never trained on; all: every "
                        "image under --data (for a folder it has never seen: on its own data, 'all' includes the "
                        "images it trained on)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="one JSON object: the report, roc_auc and top_losses")
    e.set_defaults(func=cmd_evaluate)

    o = sub.add_parser("report", help="write a model card folder (README.md, figures, metrics.json) for a checkpoint")
    o.add_argument("--checkpoint", required=True)
    o.add_argument("--data", required=True, help="the dataset the checkpoint was trained on (its test split is used)")
    o.add_argument("--out", required=True, help="folder to write the report into")
    o.add_argument("--no-weights", action="store_true", help="leave the checkpoint file out of the folder")
    o.add_argument("--device", default="auto")
    o.set_defaults(func=cmd_report)

    r = sub.add_parser("predict", help="classify images, optionally writing Grad-CAM overlays")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--cam-dir", help="write a Grad-CAM overlay PNG per image here")
    r.add_argument("--target", help="class key to explain (default: the predicted class)")
    r.add_argument("--alpha", type=float, default=0.45, help="overlay opacity, 0..1")
    r.add_argument("--colormap", default="jet")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_predict)

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

    b = sub.add_parser("bench", help="measure training and inference speed side by side (see README)", add_help=False)
    b.set_defaults(func=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
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
