"""The command line: `python -m cxr train | evaluate | predict | make-synthetic | download | bench`.

Each command is a thin reader of the library: `train` prints the events of `fit` (a progress bar, or JSON lines
with --json), `evaluate` and `predict` load a checkpoint with `load_checkpoint`. Bad arguments and unreadable
inputs end with one sentence on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Sequence

from .data import DEFAULT_CLASSES, display_name, parse_classes

EXIT_BAD_INPUT = 2


class CliError(ValueError):
    pass


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def format_report(report: dict[str, Any]) -> str:
    """A classification report as a plain-text table plus the confusion matrix."""
    names = [display_name(c) for c in report["classes"]]
    width = max(len(n) for n in names + ["macro avg"]) + 2
    lines = [f"{'':{width}}precision  recall  f1     support"]
    for key, name in zip(report["classes"], names):
        m = report["per_class"][key]
        lines.append(f"{name:{width}}{m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    mac = report["macro"]
    lines.append(f"{'macro avg':{width}}{mac['precision']:9.3f}  {mac['recall']:6.3f}  {mac['f1']:5.3f}  {report['count']:7d}")
    lines.append(f"accuracy {report['accuracy']:.3f}   confusion matrix (rows: true, columns: predicted):")
    cw = max(len(n) for n in names) + 2
    lines.append(" " * width + "".join(f"{n:>{cw}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name:{width}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- train
def _train_config(args: argparse.Namespace):
    from .presets import apply_preset
    from .train import TrainConfig
    from .transforms import AugmentConfig

    cfg = apply_preset(args.preset) if args.preset else TrainConfig()
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if "classes" in overrides:
        overrides["classes"] = parse_classes(overrides["classes"])
    if args.augment is not None:
        names = [] if args.augment == "none" else list(AugmentConfig.names()) if args.augment == "all" else args.augment.split(",")
        overrides["augment"] = AugmentConfig().only([n.strip() for n in names if n.strip()])
    return replace(cfg, **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .events import Done, Evaluated, Note, Started, Step
    from .train import fit

    cfg = _train_config(args)
    bar = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fit reports its warnings as Note events
            for ev in fit(cfg):
                if args.json:
                    _print_json(ev.to_dict())
                    continue
                if isinstance(ev, Started):
                    from tqdm import tqdm

                    sizes = ", ".join(f"{k} {v}" for k, v in ev.split.items())
                    counts = ", ".join(f"{display_name(k)} {v}" for k, v in ev.counts.items())
                    print(f"data: {cfg.data} ({ev.layout}{', SYNTHETIC' if ev.synthetic else ''}): {counts}")
                    print(f"split: {sizes}  |  device: {ev.device}  |  weights: {ev.weights}")
                    bar = tqdm(total=ev.total_steps, initial=ev.start_step, unit="step", dynamic_ncols=True)
                elif isinstance(ev, Step) and bar is not None:
                    bar.update(ev.step - bar.n)
                    bar.set_postfix(loss=f"{ev.train_loss:.3f}", img_s=f"{ev.train_images_per_sec:.1f}")
                elif isinstance(ev, Evaluated):
                    line = (
                        f"step {ev.step}/{ev.total_steps}  train loss {ev.train_loss:.3f}  val loss {ev.val_loss:.3f}  "
                        f"val accuracy {ev.val_accuracy:.1%}  {ev.train_images_per_sec:.1f} img/s  "
                        f"ETA {_fmt_time(ev.eta_s)}{'  [best]' if ev.is_best else ''}"
                    )
                    (bar.write if bar is not None else print)(line)
                elif isinstance(ev, Note):
                    (bar.write if bar is not None else print)(f"warning: {ev.message}")
                elif isinstance(ev, Done):
                    if bar is not None:
                        bar.close()
                    print(f"\nstopped after {ev.steps} steps ({ev.reason}); {ev.train_images_per_sec:.1f} training images/s")
                    print(f"best validation accuracy {ev.best_val_accuracy:.1%}; on the held-out test set:")
                    print(format_report(ev.test_report))
                    print(f"checkpoint: {ev.checkpoint}" + (f"  (last: {ev.last_checkpoint})" if ev.last_checkpoint else ""))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print("\ninterrupted: the best checkpoint so far and a -last checkpoint are kept; continue with --resume",
              file=sys.stderr)
        return 130
    return 0


# -------------------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .data import ImageCache, index_dataset, iterate_batches
    from .evaluate import classification_report, evaluate
    from .train import resolve_device

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    index = index_dataset(args.data, ckpt.classes)
    cache = ImageCache(index.files, ckpt.image_size)
    ids = list(range(len(index.files)))
    result = evaluate(ckpt.model, iterate_batches(cache, ids, index.labels, args.batch_size), device)
    report = classification_report(result.y_true, result.y_pred, ckpt.classes)
    report["loss"] = result.loss
    report["skipped_files"] = [index.files[i].name for i in cache.bad]
    if args.json:
        _print_json(report)
    else:
        print(f"{len(ids)} images under {args.data}" + (f"; {cache.bad_report()}" if cache.bad else ""))
        print(format_report(report))
    return 0


# --------------------------------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from .explain import overlay
    from .predict import Classifier

    clf = Classifier(args.checkpoint)
    if args.target is not None and args.target not in clf.classes:
        raise CliError(f"--target {args.target} is not a class of this checkpoint ({', '.join(clf.classes)})")
    cam_dir = Path(args.cam_dir) if args.cam_dir else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    failed, times = 0, []
    for file in args.images:
        try:
            t0 = time.perf_counter()
            pred = clf.predict(file, explain=cam_dir is not None, target=args.target)
            times.append(time.perf_counter() - t0)
        except ValueError as e:
            failed += 1
            if args.json:
                _print_json({"file": file, "error": str(e)})
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
            _print_json(out)
        else:
            probs = "  ".join(f"{display_name(k)} {v:.1%}" for k, v in pred.probabilities.items())
            print(f"{file}: {display_name(pred.label)}   ({probs})" + (f"   cam: {out['cam']}" if cam_dir else ""))
    if times:  # on stderr, so --json output stays one object per image
        from .bench import p50_p95

        lat, work = p50_p95([t * 1000 for t in times]), "read + predict" + (" + Grad-CAM" if cam_dir else "")
        print(f"{len(times)} images on {clf.device}: {work} {lat['p50_ms']:.1f} ms p50, {lat['p95_ms']:.1f} ms p95 "
              "per image (the first includes warm-up)", file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------- make-synthetic, download
def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic

    classes = parse_classes(args.classes) if args.classes else None
    root = make_synthetic(args.dir, per_class=args.per_class, size=args.size, seed=args.seed, classes=classes)
    print(f"wrote a synthetic dataset ({args.per_class} images per class, {args.size} px) to {root}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .download import download_dataset

    path = download_dataset(args.dest)
    print(f"dataset ready at {path}; train with: python -m cxr train --data '{path}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .model import FREEZE_LEVELS
    from .presets import PRESETS

    p = argparse.ArgumentParser(prog="python -m cxr", description="Chest X-ray classification: the ResNet18 recipe.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune ResNet18 on a dataset folder")
    t.add_argument("--data", required=True, help="dataset folder (Kaggle layouts or <class>/*.png)")
    t.add_argument("--preset", choices=sorted(PRESETS), help="start from named settings (flags still override)")
    t.add_argument("--classes", help=f"comma-separated class keys (default {','.join(DEFAULT_CLASSES)})")
    t.add_argument("--weights", help="auto (default), imagenet, none, or a state-dict file")
    t.add_argument("--epochs", type=int)
    t.add_argument("--max-steps", type=int, help="stop after this many steps (0: no cap)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--image-size", type=int)
    t.add_argument("--eval-every", type=int)
    t.add_argument("--target-accuracy", type=float)
    t.add_argument("--test-per-class", type=int)
    t.add_argument("--test-fraction", type=float)
    t.add_argument("--val-per-class", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--augment", help="'all', 'none', or a comma list of: hflip,rotate,scale,translate,brightness,contrast")
    t.add_argument("--freeze", choices=FREEZE_LEVELS, help="freeze layers up to this one (pretrained weights only)")
    t.add_argument("--channels-last", action="store_true", default=None)
    t.add_argument("--workers", type=int, help="decoding processes (0: decode in the training loop)")
    t.add_argument("--device", help="auto (default), cpu or cuda")
    t.add_argument("--out", help="best checkpoint path (default checkpoints/resnet18-<time>.pt)")
    t.add_argument("--resume", help="continue from this checkpoint")
    t.add_argument("--json", action="store_true", help="print one JSON object per event")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a checkpoint on every image under a folder")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

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
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as e:
        if os.environ.get("CXR_DEBUG"):
            raise
        # Library errors are written as sentences for people; show the sentence, not the traceback.
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
