"""Which class-activation map the app shows by default, measured: for each input size the app trains at, Grad-CAM
and Layer-CAM at each stage of ResNet18 (and Layer-CAM fused with layer4), with

- grid: cells per side of the map before it is upsampled;
- ms: time per map at batch 1 on this CPU (the fastest of 7 after a warm-up, the whole `cam_raw` call: on a shared
  machine the fastest run is the one least slowed by others);
- signs: the share of the map's mass inside the region where the class's signs were drawn (synthetic COVID and
  viral pneumonia X-rays, `cxr.data.synthetic.draw_with_evidence`), for the true class; beside it the region's
  share of the image, what a map spread evenly would score;
- point: the pointing game, the share of those X-rays whose map peaks inside that region;
- lungs: the share of the map's mass inside the lungs (all classes), against the lungs' share of the image;
- random: Adebayo et al.'s sanity check, the rank correlation (Spearman) between the map of the trained model and
  that of a copy with random weights, averaged over the X-rays (an empty map counts 0: it differs); near 1 the map
  does not depend on what the model learned;
- empty: how many of the trained model's maps are all zero (no overlay at all), and how many of the random model's.

A small model is trained from random weights on synthetic X-rays (the Fast preset's recipe for `--steps` steps, so
a busy machine changes the wall time, not the model) at each size up to `--max-train-size`; a larger size is scored
with the model of the largest trained size, as the header of its table says. The maps are scored on fresh
synthetic X-rays no model saw. `*` marks the default.

    python -m benchmarks.map_grid [--sizes 64,80,112,224] [--steps 100] [--max-train-size 112] [--images 30]
                                  [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr.data.lungs import area_share, lung_focus
from cxr.data.synthetic import draw_with_evidence, make_synthetic
from cxr.data.transforms import prepare_image, to_model_input
from cxr.explain.maps import CAM_RULES, STAGES, cam_raw, map_stage, stage_grid
from cxr.explain.sanity import compare_maps, randomized_copy
from cxr.train.checkpoint import load_checkpoint
from cxr.train.events import Done
from cxr.train.loop import fit
from cxr.train.plan import _cpu_model
from cxr.train.presets import apply_preset

CLASSES = ("covid", "normal", "viral")


def train(root: Path, size: int, steps: int, out: Path) -> tuple[torch.nn.Module, Done]:
    """A model trained at `size` px for `steps` steps with the Fast preset's recipe, and how its run ended."""
    cfg = replace(apply_preset("fast-cpu"), data=str(root), classes=CLASSES, weights="none", image_size=size,
                  auto_size=False, time_budget_s=0.0, max_steps=steps, attention=False, out=str(out), eval_every=25,
                  test_per_class=20, val_per_class=10)  # 90 training X-rays per class
    done = [e for e in fit(cfg) if isinstance(e, Done)][-1]
    return load_checkpoint(done.checkpoint).model.eval(), done


def fresh_xrays(size: int, n: int, seed: int) -> tuple[torch.Tensor, list[int], np.ndarray, np.ndarray]:
    """`n` unseen X-rays per class drawn at 256 px and squashed to `size` as the app does: model inputs, labels,
    lung masks and sign regions (bool [N, size, size])."""
    xs, labels, lungs, signs = [], [], [], []
    for k, key in enumerate(CLASSES):
        rng = np.random.default_rng([seed, k])
        for _ in range(n):
            img, mask, sign = draw_with_evidence(key, 256, rng)
            xs.append(prepare_image(Image.fromarray(img), size))
            lungs.append(np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)) > 0)
            signs.append(np.asarray(Image.fromarray(sign).resize((size, size), Image.Resampling.NEAREST)) > 0)
            labels.append(k)
    return to_model_input(torch.stack(xs)), labels, np.stack(lungs), np.stack(signs)


def candidates(size: int) -> list[tuple[str, tuple[str, ...], str]]:
    """(name, stages, rule): both rules at layer2, layer3 and layer4, and Layer-CAM fused with layer4."""
    out = [(f"{rule} {stage}", (stage,), rule) for stage in STAGES[1:] for rule in CAM_RULES]
    if map_stage(size) != "layer4":
        out.append((f"layer-cam {map_stage(size)}+layer4", (map_stage(size), "layer4"), "layer-cam"))
    return out


def maps_of(model: torch.nn.Module, x: torch.Tensor, labels: list[int], stages: tuple[str, ...], rule: str,
            batch: int = 30) -> np.ndarray:
    out = [cam_raw(model, x[i : i + batch], labels[i : i + batch], stages, rule)[0] for i in range(0, len(x), batch)]
    return torch.cat(out).detach().numpy()


def ms_per_map(model: torch.nn.Module, x: torch.Tensor, stages: tuple[str, ...], rule: str) -> float:
    cam_raw(model, x, None, stages, rule)  # warm-up
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        cam_raw(model, x, None, stages, rule)
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def score(maps: np.ndarray, random_maps: np.ndarray, labels: list[int], lungs: np.ndarray,
          signs: np.ndarray) -> dict[str, "float | str"]:
    empty = [int((m.reshape(len(m), -1).max(1) <= 0).sum()) for m in (maps, random_maps)]
    sick = [i for i, k in enumerate(labels) if CLASSES[k] != "normal"]
    shares = [lung_focus(maps[i], signs[i]) for i in sick]
    peaks = [bool(maps[i].max() > 0 and signs[i].flat[maps[i].argmax()]) for i in sick]
    rhos = [compare_maps(a, b) for a, b in zip(maps, random_maps)]
    return {"signs": float(np.nanmean(shares)), "point": float(np.mean(peaks)),
            "lungs": float(np.nanmean([lung_focus(m, l) for m, l in zip(maps, lungs)])),
            "random": float(np.mean(np.nan_to_num(rhos, nan=0.0))), "empty": f"{empty[0]}/{empty[1]}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,80,112,224", help="input sizes, comma-separated")
    ap.add_argument("--steps", type=int, default=100, help="training steps (batches of 32) per model")
    ap.add_argument("--max-train-size", type=int, default=112, help="larger sizes reuse the model of the largest "
                    "trained size (training at 224 px costs four times 112's)")
    ap.add_argument("--images", type=int, default=30, help="unseen X-rays per class to score the maps on")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()
    lines = [f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {_cpu_model()}, {torch.get_num_threads()} "
             f"threads, torch {torch.__version__}, Python {platform.python_version()}; {args.steps} training steps per "
             f"model; load average {os.getloadavg()[0]:.1f} at the start"]

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    print(lines[0], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "data", per_class=120, size=256, seed=0, classes=CLASSES)
        sizes = sorted(int(s) for s in args.sizes.split(","))
        trained = {}
        for size in sizes:
            at = max([s for s in sizes if s <= args.max_train_size] or [size]) if size > args.max_train_size else size
            if at not in trained:
                torch.manual_seed(0)
                trained[at] = train(root, at, args.steps, Path(tmp) / f"m{at}.pt")
            model, done = trained[at]
            random_model = randomized_copy(model, seed=0).eval()
            x, labels, lungs, signs = fresh_xrays(size, args.images, seed=1)
            with torch.no_grad():
                seen = float((model(x).argmax(1) == torch.tensor(labels)).float().mean())
            sick = [i for i, k in enumerate(labels) if CLASSES[k] != "normal"]
            say("")
            say(f"{size} px: the model trained at {at} px ({done.steps} steps, test accuracy {done.test_accuracy:.2f}), "
                f"on the {len(x)} unseen X-rays {seen:.2f}; the sign "
                f"regions cover {np.mean([area_share(signs[i]) for i in sick]):.0%} of the image, the lungs "
                f"{np.mean([area_share(m) for m in lungs]):.0%}; default: {map_stage(size)}")
            say(f"  {'map':<26}{'grid':>6}{'ms':>8}{'signs':>8}{'point':>8}{'lungs':>8}{'random':>8}{'empty':>8}")
            for name, stages, rule in candidates(size):
                maps = maps_of(model, x, labels, stages, rule)
                random_maps = maps_of(random_model, x, labels, stages, rule)
                s = score(maps, random_maps, labels, lungs, signs)
                grid = stage_grid(size, stages[0])
                mark = "*" if stages == (map_stage(size),) and rule == "grad-cam" else " "
                say(f"{mark} {name:<26}{grid:>4}x{grid:<2}{ms_per_map(model, x[:1], stages, rule):>7.1f}"
                    f"{s['signs']:>8.2f}{s['point']:>8.2f}{s['lungs']:>8.2f}{s['random']:>8.2f}{s['empty']:>8}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
