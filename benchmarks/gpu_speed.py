"""The GPU goals of the speed work, measured in one process on one CUDA machine (see README, Speed: One GPU).

    python -m benchmarks.gpu_speed [--out DIR] [--copies 28] [--epochs 5] [--batches 128,256]

1. `python -m cxr bench --runs plain,gpu` on a synthetic set (750 images, 299 px, as the database's files), for
   the ratio to the plain recipe, the compute-only ceiling and the batch-1 latency table (predict + Grad-CAM
   against a bare forward pass).
2. Whole runs of the GPU preset on that set linked `--copies` times (28: 21,000 files, the database's size; each
   link is its own file to decode), from random weights, with no target so every epoch runs: seconds from the
   call to the first step (decoding overlaps with training), to the end of each epoch, and to the end; steady
   training images/s over the epochs after the first (every image already decoded).
Synthetic images are trivially separable, so accuracy here is not the point; time is. `--quick` shrinks everything
so the script itself can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def link_copies(src: Path, dst: Path, copies: int) -> int:
    """`dst`/<class>/images/ holding every image of `src` `copies` times (symlinks with distinct names)."""
    n = 0
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        out = dst / folder.name / "images"
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted((folder / "images").iterdir()):
            for k in range(copies):
                (out / f"{k:02d}-{f.name}").symlink_to(f.resolve())
                n += 1
    return n


def whole_run(data: Path, epochs: int, batch: int, device: str, quick: bool, **overrides) -> dict:
    from cxr.train.events import Done, Started, Step
    from cxr.train.presets import apply_preset
    from cxr.train.loop import fit

    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(apply_preset("gpu"), data=str(data), weights="none", epochs=epochs, batch_size=batch,
                      target_accuracy=0.0, device=device, out=str(Path(tmp) / "run.pt"), **overrides)
        if quick:
            cfg = replace(cfg, image_size=64, workers=2, amp=False)
        t0 = time.perf_counter()
        started = first = None
        epoch_end: dict[int, float] = {}
        steps = []
        for ev in fit(cfg):
            now = time.perf_counter() - t0
            if isinstance(ev, Started):
                started, per_epoch = now, ev.total_steps // epochs
            elif isinstance(ev, Step):
                first = now if first is None else first
                steps.append((ev.step, now))
                if ev.step % per_epoch == 0:
                    epoch_end[ev.step // per_epoch] = now
            elif isinstance(ev, Done):
                done, end = ev, now
    after_first = [(s, t) for s, t in steps if s > per_epoch]
    steady = ((after_first[-1][0] - after_first[0][0]) * batch / (after_first[-1][1] - after_first[0][1])
              if len(after_first) > 1 else float("nan"))
    return {"batch": batch, "epochs": epochs, "overrides": overrides, "workers": cfg.workers, "steps": done.steps,
            "images": done.steps * batch, "started_s": started, "first_step_s": first, "epoch_end_s": epoch_end,
            "total_s": end, "fit_seconds": done.seconds, "eval_s": done.seconds_eval, "data_s": done.seconds_data,
            "attention_s": done.seconds_attention,
            "checkpoint_s": done.seconds_checkpoint, "writing_s": done.seconds_writing, "steady_train_images_per_s_epochs_2_on": steady,
            "test_accuracy": done.test_accuracy}


def graph_matches_eager(data: Path, device: str) -> dict:
    """The CUDA graphs of a Classifier give the eager model's probabilities and Grad-CAM maps (predicted class and
    a class given)."""
    from cxr.train.checkpoint import save_checkpoint
    from cxr.explain.maps import gradcam
    from cxr.train.model import build_model
    from cxr.predict import Classifier

    files = sorted(data.glob("*/images/*.png"))[:3]
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = build_model(3, "none")
        clf = Classifier(save_checkpoint(Path(tmp) / "m.pt", model, ("covid", "normal", "viral"), 224, {}, {}), device)
    worst_p = worst_map = 0.0
    for f in files:
        for target in (None, "normal"):
            graphed = clf.predict(f, explain=True, target=target)
            t = None if target is None else clf.classes.index(target)
            maps, logits = gradcam(clf.model, clf.model_input(graphed.image), target=t)  # eager
            probs = logits.float().softmax(1)[0].cpu()
            worst_p = max(worst_p, (probs - torch.tensor(list(graphed.probabilities.values()))).abs().max().item())
            worst_map = max(worst_map, float(abs(maps[0] - graphed.heatmap).max()))
    return {"graphs": [str(k) for k in clf._graphs], "max_prob_diff": worst_p, "max_map_diff": worst_map}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "bench-results"))
    p.add_argument("--copies", type=int, default=28)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batches", default="128,256")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = p.parse_args()
    from cxr.data.synthetic import make_synthetic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp())
    t = time.perf_counter()
    per_class, size = (20, 64) if args.quick else (250, 299)
    syn = make_synthetic(work / "synthetic", per_class=per_class, size=size, classes=("covid", "normal", "viral"))
    n = link_copies(syn, work / "linked", args.copies)
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{os.cpu_count()} cores; synthetic set and {n} linked files in {time.perf_counter() - t:.1f} s", flush=True)
    bench = [sys.executable, "-m", "cxr", "bench", "--runs", "plain,gpu", "--data", str(syn), "--out", str(out),
             "--images", "200" if args.quick else "3000"] + (["--latency-images", "2", "--latency-reps", "1"] if args.quick else [])
    t = time.perf_counter()
    subprocess.run(bench, check=True)
    print(f"bench: {time.perf_counter() - t:.0f} s", flush=True)
    print("CUDA graphs against eager:", json.dumps(graph_matches_eager(syn, device)), flush=True)
    runs = []
    for batch in [int(b) for b in args.batches.split(",")]:
        r = whole_run(work / "linked", args.epochs, batch, device, args.quick)
        runs.append(r)
        print(json.dumps(r), flush=True)
    r = whole_run(work / "linked", args.epochs, int(args.batches.split(",")[0]), device, args.quick, attention=False)
    runs.append(r)
    print(json.dumps(r), flush=True)
    (out / "gpu-speed.json").write_text(json.dumps(runs, indent=2))
    print("\nwhole runs (seconds from the call; steady: training images/s after the first epoch):")
    for r in runs:
        ends = ", ".join(f"{v:.1f}" for v in r["epoch_end_s"].values())
        print(f"batch {r['batch']}{' no attention strip' if r['overrides'] else ''}: {r['images']} images, first step "
              f"{r['first_step_s']:.1f} s, epochs end {ends}, total {r['total_s']:.1f} s (eval {r['eval_s']:.1f}, "
              f"attention {r['attention_s']:.1f}, checkpoints {r['checkpoint_s']:.1f} in the loop and "
              f"{r['writing_s']:.1f} writing aside), steady {r['steady_train_images_per_s_epochs_2_on']:.0f} img/s, "
              f"{r['workers']} decoders")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
