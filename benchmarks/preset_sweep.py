"""Which Fast-preset variant learns most in the steps a two-core CPU gets in three minutes: a sweep over seeds.

    python -m benchmarks.preset_sweep [--device cuda] [--steps 450] [--seeds 0-7] [--variants base,tta,...] [--procs 8]
    python -m benchmarks.preset_sweep --summary RUN.jsonl [MORE.jsonl ...]    # the table of earlier runs, pooled

The time-to-accuracy benchmark (`python -m cxr bench --time-to`) is the judge of the Fast preset, but one seed of it
is three minutes of a quiet CPU, and a test set of 90 X-rays moves 1.1 points per image: three seeds cannot tell two
variants a point apart. This script asks the question that decides between them, "what does each variant reach in
the same CPU time?", with the CPU time replaced by its step count: every variant runs the number of steps it gets on
two cores in the budget (`--steps` at 112 px, batch 32, scaled by the variant's CPU images/s measured beside it,
`CPU_SPEED`), from random weights on `../shared/cxr-sample`, for many seeds, on whatever device is at hand (a GPU
runs a seed in seconds, several processes at once). The step-count schedule is what the CPU run does by time. The
winner is then confirmed on the CPU by the benchmark itself; numbers from this script are not time-to-accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

# Training images/s of each (image size, batch) on this project's two-core machine, bfloat16 (one loop of train_step
# on random tensors, measured side by side): what decides how many steps a variant gets in the same seconds.
CPU_SPEED = {(96, 32): 131.0, (112, 32): 118.1, (128, 32): 78.0, (112, 64): 99.5, (144, 32): 57.6}

# The starting point of every variant: the Fast preset as it was before this sweep (mirror images only, no
# test-time flip), whatever the preset says today.
BASE = {"tta_flip": False, "augment": {"hflip": True, "rotate": 0.0, "scale": 0.0, "translate": 0.0, "brightness": 0.0,
                                       "contrast": 0.0}}
SHIFT = {"hflip": True, "rotate": 0.0, "scale": 0.05, "translate": 0.03, "brightness": 0.0, "contrast": 0.0}

# Each variant: TrainConfig overrides on top of BASE, plus the share of the base's steps it keeps for costs the
# throughput table does not see (a test-time flip doubles every validation: about 3 % of a run).
VARIANTS: dict[str, tuple[dict, float]] = {
    "base": ({}, 1.0),
    "tta": ({"tta_flip": True}, 0.96),
    "smooth": ({"label_smoothing": 0.1}, 1.0),
    "lr1e-3": ({"lr": 1e-3}, 1.0),
    "lr4e-3": ({"lr": 4e-3}, 1.0),
    "warm0.3": ({"warmup": 0.3}, 1.0),
    "wd0": ({"weight_decay": 0.0}, 1.0),
    "shift": ({"augment": SHIFT}, 1.0),
    "light": ({"augment": dict(BASE["augment"], brightness=0.1, contrast=0.2)}, 1.0),
    "s96": ({"image_size": 96}, 1.0),
    "s128": ({"image_size": 128}, 1.0),
    "b64": ({"batch_size": 64, "lr": 3e-3}, 1.0),
    "tta+smooth": ({"tta_flip": True, "label_smoothing": 0.1}, 0.96),
    "shift+tta": ({"tta_flip": True, "augment": SHIFT}, 0.96),
    "sh-zoom10": ({"augment": dict(SHIFT, scale=0.10, translate=0.05)}, 1.0),
    "sh-rot5": ({"augment": dict(SHIFT, rotate=5.0)}, 1.0),
    "sh-s96": ({"augment": SHIFT, "image_size": 96}, 1.0),
    "sh-lr1e-3": ({"augment": SHIFT, "lr": 1e-3}, 1.0),
    "sh-bc": ({"augment": dict(SHIFT, brightness=0.1, contrast=0.2)}, 1.0),
}


def steps_for(overrides: dict, share: float, base_steps: int) -> int:
    size, batch = overrides.get("image_size", 112), overrides.get("batch_size", 32)
    images_per_s = CPU_SPEED[(size, batch)] / CPU_SPEED[(112, 32)]
    return max(1, round(base_steps * images_per_s * 32 / batch * share))


def run_one(name: str, seed: int, steps: int, data: str, device: str) -> dict:
    import torch

    from cxr.train.events import Done
    from cxr.train.presets import apply_preset
    from cxr.train.loop import fit
    from cxr.data.transforms import AugmentConfig

    torch.set_num_threads(1 if device == "cuda" else max(1, torch.get_num_threads()))
    overrides = dict(BASE, **VARIANTS[name][0])
    overrides["augment"] = AugmentConfig(**overrides["augment"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(apply_preset("fast-cpu"), data=data, weights="none", seed=seed, device=device, epochs=10_000,
                      max_steps=steps, time_budget_s=0.0, target_accuracy=0.0, attention=False,
                      out=str(Path(tmp) / "run.pt"), save_last_every_s=1e9, **overrides)
        done = next(ev for ev in fit(cfg) if isinstance(ev, Done))
    return {"name": name, "seed": seed, "steps": done.steps, "test_accuracy": done.test_accuracy,
            "val_accuracy": done.best_val_accuracy, "seconds": time.perf_counter() - t0}


def summarise(results: list[dict]) -> dict:
    """Per variant: test accuracy over its seeds, and the paired difference from "base" on the seeds both ran (the
    same split and start, so the split's difficulty cancels) with its standard error. Prints the table."""
    base = {r["seed"]: r["test_accuracy"] for r in results if r["name"] == "base"}
    print(f"{'variant':11} {'seeds':>5} {'steps':>5} {'test mean':>9} {'sd':>6} {'vs base (paired)':>17}  per seed")
    summary = {}
    for n in dict.fromkeys(r["name"] for r in results):
        rs = sorted((r for r in results if r["name"] == n), key=lambda r: r["seed"])
        accs = [r["test_accuracy"] for r in rs]
        diffs = [r["test_accuracy"] - base[r["seed"]] for r in rs if r["seed"] in base]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        summary[n] = {"seeds": [r["seed"] for r in rs], "steps": sorted({r["steps"] for r in rs}),
                      "mean": statistics.mean(accs), "sd": statistics.pstdev(accs), "per_seed": accs,
                      "vs_base": statistics.mean(diffs) if diffs else None, "vs_base_se": se}
        paired = f"{summary[n]['vs_base']:+.3f} +- {se:.3f}" if diffs and n != "base" else "-"
        print(f"{n:11} {len(rs):5d} {rs[0]['steps']:5d} {summary[n]['mean']:9.3f} {summary[n]['sd']:6.3f} "
              f"{paired:>17}  " + " ".join(f"{a:.3f}" for a in accs))
    return summary


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "cxr-sample"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=450, help="steps of the base variant (112 px, batch 32)")
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--out", default=os.environ.get("OUT", "bench-results"))
    p.add_argument("--summary", nargs="+", metavar="JSONL", help="only print the table of earlier runs' logs, pooled")
    args = p.parse_args()
    if args.summary:
        summarise([json.loads(line) for f in args.summary for line in Path(f).read_text().splitlines() if line])
        return 0
    names, seeds = args.variants.split(","), parse_seeds(args.seeds)
    jobs = [(n, s, steps_for(*VARIANTS[n], args.steps), args.data, args.device) for s in seeds for n in names]
    t = time.perf_counter()
    results = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.procs) as pool, open(out / "preset-sweep.jsonl", "a") as log:
        for r in pool.map(run_one, *zip(*jobs)):  # seed by seed: a run cut short still covers every variant
            results.append(r)
            print(json.dumps(r), flush=True)
            log.write(json.dumps(r) + "\n")
            log.flush()
    print(f"{len(jobs)} runs in {time.perf_counter() - t:.0f} s on {args.device}\n")
    summary = summarise(results)
    (out / "preset-sweep.json").write_text(json.dumps({"args": vars(args), "results": results, "summary": summary},
                                                      indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
