"""The `evaluate` and `report` commands: score a checkpoint once over its own test images (or every image under a
folder) and print the report, ROC AUC, lung focus and the most confidently wrong images (or one JSON object);
write its model card folder. Both read the library (`cxr.explain.interpret`, `cxr.explain.report`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr.cli.common import checkpoint_file, existing_folder, output_folder, print_json
from cxr.data.index import display_name
from cxr.errors import UserError
from cxr.train.evaluate import format_report

TOP_LOSSES = 10  # the most confidently wrong images `evaluate` lists


def _folders_left_out(root: Path, class_dirs: "tuple[Path, ...]") -> list[str]:
    """The folders beside the model's class folders: classes the model has none for, whose images are left out."""
    return sorted(set(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
                  - set(p.name for p in class_dirs))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cxr.data.index import index_dataset
    from cxr.explain.focus import lung_focus_report, lung_focus_words
    from cxr.explain.interpret import cache_for, interpret_as_trained, rebuild_test_set
    from cxr.train.calibration import measure_calibration
    from cxr.train.checkpoint import load_checkpoint
    from cxr.train.run import resolve_device

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    checkpoint_file(args.checkpoint)
    existing_folder(args.data, "--data")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    split_notes: tuple[str, ...] = ()
    if args.split == "test":  # the checkpoint's own test images: by their saved names, else rebuilt from its seed
        index, split, cache = rebuild_test_set(ckpt, args.data)
        ids, what, split_notes = list(split.test), "test images of this checkpoint's split", split.notes
    else:
        index = index_dataset(args.data, ckpt.classes)
        cache, ids, what = cache_for(ckpt, index), list(range(len(index.files))), "images (all of them)"
    ignored = _folders_left_out(index.root, index.class_dirs)
    notes = list(split_notes)
    if ignored:  # a 2-class model on 3-class data scores 2 classes: say which folder's images it never saw
        notes.append(f"this model has no class for the folder{'s' if len(ignored) > 1 else ''} {', '.join(ignored)}, "
                     f"so {'their' if len(ignored) > 1 else 'its'} images were left out (it knows "
                     f"{', '.join(ckpt.class_names)})")
    # One pass of the model: every view (report, top losses, ROC AUC) derives from the same probabilities.
    interp = interpret_as_trained(ckpt, cache, ids, index.labels, args.batch_size, device)
    report = {**interp.report, "loss": float(interp.losses.mean()), "roc_auc": interp.roc_auc(),
              "top_losses": [r.to_dict() for r in interp.top_losses(TOP_LOSSES)],
              "skipped_files": [index.files[i].name for i in cache.bad], "ignored_folders": ignored,
              "lung_focus": lung_focus_report(ckpt, index, ids, args.batch_size, device), "split": args.split,
              "notes": notes, **measure_calibration(interp.probabilities, interp.y_true, ckpt.temperature)}
    if args.json:
        print_json(report)
        return 0
    print(f"{len(ids)} {what} under {args.data}" + (f"; {cache.bad_report()}" if cache.bad else ""))
    for note in notes:
        print(f"note: {note}")
    if split_notes:  # test images gone from the folder: every image there can still be scored
        print("note: --split all scores every image under --data instead")
    print(format_report(report))
    auc = ", ".join(f"{display_name(k)} {'n/a' if v is None else f'{v:.3f}'}" for k, v in report["roc_auc"].items())
    print(f"ROC AUC (one class against the rest): {auc}")
    print(lung_focus_words(report["lung_focus"]))
    print(f"calibration: temperature {ckpt.temperature:.2f}; expected calibration error (ECE) on these images "
          f"{report['ece']['before']:.3f} before, {report['ece']['after']:.3f} after")
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

    checkpoint_file(args.checkpoint)
    existing_folder(args.data, "--data")
    out = output_folder(args.out, "--out", "the report")
    folder = write_report(args.checkpoint, args.data, out, include_weights=not args.no_weights,
                          device=resolve_device(args.device))
    print(f"wrote the report for {Path(args.checkpoint).name} to {folder}:")
    for f in sorted(folder.iterdir()):
        if f.is_file():
            print(f"  {f.name}")
    return 0


def add_evaluate_parsers(sub: "argparse._SubParsersAction") -> None:
    """The `evaluate` and `report` sub-commands and their flags."""
    e = sub.add_parser("evaluate", help="score a checkpoint on its own test images (or every image under a folder)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", choices=("test", "all"), default="test",
                   help="test (default): only the checkpoint's own test images, which it never trained on; all: every "
                        "image under --data (for a folder it has never seen: on its own data, 'all' includes the "
                        "images it trained on)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="one JSON object: the report, roc_auc, top_losses, temperature and ece")
    e.set_defaults(func=cmd_evaluate)

    o = sub.add_parser("report", help="write a model card folder (README.md, figures, metrics.json) for a checkpoint")
    o.add_argument("--checkpoint", required=True)
    o.add_argument("--data", required=True, help="the dataset the checkpoint was trained on (its test split is used)")
    o.add_argument("--out", required=True, help="folder to write the report into")
    o.add_argument("--no-weights", action="store_true", help="leave the checkpoint file out of the folder")
    o.add_argument("--device", default="auto")
    o.set_defaults(func=cmd_report)
