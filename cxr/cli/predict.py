"""The `predict` command: classify image files with `Classifier`, one line (or one JSON object) per image, with a
Grad-CAM overlay per image when asked. An unreadable image is reported and the rest go on; the exit code is then 2.
Notes about an image (a multi-frame DICOM is classified by its first frame) go to stderr and into its JSON object.
Each answer says whether the image looks like the model's training X-rays (`ood_score`, `looks_like_training_data`:
null for a checkpoint without that check); one that does not is marked, since its answer means nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from cxr.cli.common import EXIT_BAD_INPUT, checkpoint_file, output_folder, print_json
from cxr.data.index import display_name
from cxr.errors import UserError


def _target_key(classes: "tuple[str, ...]", given: str) -> str:
    """A class key from a key ("viral") or the name the output prints ("Viral Pneumonia"), any case."""
    named = {n.casefold(): k for k in classes for n in (k, display_name(k))}
    key = named.get(given.strip().casefold())
    if key is None:
        raise UserError(f"--target {given} is not a class of this checkpoint (one of "
                        f"{', '.join(f'{k} ({display_name(k)})' for k in classes)})")
    return key


def cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from cxr.explain.maps import overlay
    from cxr.predict import Classifier

    checkpoint_file(args.checkpoint)
    cam_dir = output_folder(args.cam_dir, "--cam-dir", "the Grad-CAM overlays") if args.cam_dir else None
    clf = Classifier(args.checkpoint)
    target = None
    if args.target is not None:
        target = _target_key(clf.classes, args.target)
        if cam_dir is None:
            print("note: --target chooses the class Grad-CAM explains; without --cam-dir no map is drawn",
                  file=sys.stderr)
    if cam_dir is not None:
        cam_dir.mkdir(parents=True, exist_ok=True)
    failed, times, warned = 0, [], set()
    for file in args.images:
        try:
            t0 = time.perf_counter()
            # Warnings become one line each (once per run): the reader's note is said below, beside the answer.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
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
                               "ood_score": None if pred.ood_score is None else round(pred.ood_score, 4),
                               "looks_like_training_data": pred.looks_like_training_data, "ms": round(times[-1] * 1000, 2)}
        note = pred.image.info.get("note")  # e.g. "frames.dcm holds 3 frames; only the first is shown and classified"
        if note:
            out["note"] = note
            print(f"note: {note}", file=sys.stderr)
        for message in dict.fromkeys(str(w.message) for w in caught if str(w.message) not in (note, *warned)):
            warned.add(message)
            print(f"warning: {message}", file=sys.stderr)
        if cam_dir is not None:
            cam_path = cam_dir / f"{Path(file).stem}_gradcam_{pred.target}.png"
            Image.fromarray(overlay(pred.image, pred.heatmap, args.alpha, args.colormap)).save(cam_path)
            out["cam"] = str(cam_path)
        if args.json:
            print_json(out)
        else:
            probs = "  ".join(f"{display_name(k)} {v:.1%}" for k, v in pred.probabilities.items())
            unlike = "   NOT LIKE THE TRAINING X-RAYS: the answer means nothing" if pred.looks_like_training_data is False else ""
            print(f"{file}: {display_name(pred.label)}   ({probs}){unlike}" + (f"   cam: {out['cam']}" if cam_dir else ""))
    if times:  # on stderr, so --json output stays one object per image
        from cxr.bench.measure import p50_p95

        lat, work = p50_p95([t * 1000 for t in times]), "read + predict" + (" + Grad-CAM" if cam_dir else "")
        print(f"{len(times)} images on {clf.device}: {work} {lat['p50_ms']:.1f} ms p50, {lat['p95_ms']:.1f} ms p95 "
              "per image (the first includes warm-up)", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0  # an unreadable image is bad input, not a bug


def add_predict_parser(sub: "argparse._SubParsersAction") -> None:
    """The `predict` sub-command and its flags."""
    r = sub.add_parser("predict", help="classify images, optionally writing Grad-CAM overlays")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--cam-dir", help="write a Grad-CAM overlay PNG per image here")
    r.add_argument("--target", help="class key to explain (default: the predicted class)")
    r.add_argument("--alpha", type=float, default=0.45, help="overlay opacity, 0..1")
    r.add_argument("--colormap", default="jet")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_predict)
