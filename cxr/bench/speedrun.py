"""Time to accuracy: how many seconds each training setting needs to reach a validation accuracy, from the start.

Throughput is not what a waiting class feels; the time until the model is good is. `python -m cxr bench --time-to
0.85,0.90` trains each setting (the plain recipe, the presets, and the first Fast preset kept here as `fast-cpu-v1`
for comparison) from random weights on the same data for each seed, each run in its own process and under a wall
-clock budget, and reports per setting the seconds from the start (indexing, decoding and evaluations included) until
validation accuracy first reaches each threshold, the test accuracy at the end, and the spread over seeds. It plots
validation accuracy against seconds for every run in one PNG. One machine, one invocation: compare within it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cxr.train.config import TrainConfig, SAMPLE_DATA
from cxr.bench.measure import worker_env
from cxr.train.presets import PRESETS, apply_preset

# The Fast preset of the first round, kept for the comparison the README shows: the recipe's settings (Adam, all
# augmentations, float32, best validation weights kept) at 128 px, batch 16, lr 3e-4.
LEGACY = {"fast-cpu-v1": dict(image_size=128, batch_size=16, lr=3e-4, eval_every=20, epochs=30)}


# Each library's own switch down to AVX2: torch's kernels (ATen's dispatch), oneDNN's convolutions, MKL's BLAS.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def settings_for(name: str):
    """The TrainConfig a run name stands for (a preset, or a legacy setting)."""
    if name in LEGACY:
        return replace(TrainConfig(), preset=name, **LEGACY[name])
    return apply_preset(name)


def first_reach(curve: list[tuple[float, float]], threshold: float) -> float | None:
    """Seconds at which a (seconds, accuracy) curve first reaches `threshold`; None when it never does."""
    return next((t for t, acc in curve if acc >= threshold), None)


def run_one(name: str, data: str, seed: int, budget: float, device: str, float32: bool = False) -> dict[str, Any]:
    """One training run, timed from before indexing to after the final test: its validation curve and test score.
    `float32` turns a preset's CPU bfloat16 off, to see what a CPU without it (no AMX or AVX512-BF16) would get."""
    import torch

    from cxr.train.events import Done, Evaluated, Started

    if name == "plain":
        from cxr.bench.baseline import run_plain_recipe

        r = run_plain_recipe(data, 10**9, "none", seed, torch.device(device), budget_s=budget)
        return {"curve": r["curve"], "test_accuracy": r["test_accuracy"], "seconds": r["seconds_to_end"], "steps": r["steps"]}
    from tempfile import TemporaryDirectory

    from cxr.train.loop import fit

    cfg = settings_for(name)
    t0 = time.perf_counter()
    with TemporaryDirectory() as tmp:
        cfg = replace(cfg, data=data, weights="none", seed=seed, device=device, epochs=10_000, max_steps=0,
                      time_budget_s=budget, out=str(Path(tmp) / "run.pt"), save_last_every_s=1e9,
                      cpu_bf16=cfg.cpu_bf16 and not float32)
        curve, done, started = [], None, None
        for ev in fit(cfg):
            if isinstance(ev, Started):
                started = ev
            elif isinstance(ev, Evaluated):
                curve.append((time.perf_counter() - t0, ev.val_accuracy))
            elif isinstance(ev, Done):
                done = ev
    return {"curve": curve, "test_accuracy": done.test_accuracy, "seconds": time.perf_counter() - t0,
            "steps": done.steps, "reason": done.reason, "image_size": started.image_size, "plan": started.plan}


def summarise(runs: list[dict], thresholds: list[float]) -> dict[str, Any]:
    """Per threshold: the seconds to reach it (mean and range over the seeds that did, and how many did); the
    test accuracy at the end (mean, min, max)."""
    out: dict[str, Any] = {"seeds": len(runs)}
    for th in thresholds:
        times = [t for t in (first_reach(r["curve"], th) for r in runs) if t is not None]
        out[f"to_{th:g}"] = {"reached": len(times), "mean_s": statistics.mean(times) if times else None,
                             "min_s": min(times, default=None), "max_s": max(times, default=None)}
    accs = [r["test_accuracy"] for r in runs]
    out["test_accuracy"] = {"mean": statistics.mean(accs), "min": min(accs), "max": max(accs),
                            "per_seed": accs}
    out["seconds"] = statistics.mean(r["seconds"] for r in runs)
    return out


def table(result: dict) -> str:
    """The README's table: seconds to each threshold, and the end test accuracy, per setting."""
    ths = result["thresholds"]
    head = ["setting"] + [f"s to val {th:g} (mean, range, reached)" for th in ths] + ["test acc mean (min-max)", "run s"]
    rows = [head]
    for name, s in result["settings"].items():
        cells = [name]
        for th in ths:
            t = s[f"to_{th:g}"]
            cells.append("never" if t["mean_s"] is None else
                         f"{t['mean_s']:.0f} ({t['min_s']:.0f}-{t['max_s']:.0f}), {t['reached']}/{s['seeds']}")
        acc = s["test_accuracy"]
        cells += [f"{acc['mean']:.3f} ({acc['min']:.3f}-{acc['max']:.3f})", f"{s['seconds']:.0f}"]
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def plot(result: dict, path: Path) -> Path:
    """Validation accuracy against seconds for every run, one colour per setting, threshold lines in grey."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    colours = ["#888888", "#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2"]
    for k, (name, runs) in enumerate(result["runs"].items()):
        for j, r in enumerate(runs):
            xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
            ax.plot(xs, ys, color=colours[k % len(colours)], alpha=0.8, linewidth=1.4, label=name if j == 0 else None)
    for th in result["thresholds"]:
        ax.axhline(th, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.axvline(result["budget_s"], color="#bbbbbb", linestyle="--", linewidth=1)
    ax.set_xlabel("seconds since the start (indexing, decoding and evaluations included)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Time to accuracy on {Path(result['data']).name}, {result['device']}, random weights")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=110)
    return path


def build_parser() -> argparse.ArgumentParser:
    """`python -m cxr bench --time-to`'s flags (docs/cli.md is written from them)."""
    p = argparse.ArgumentParser(prog="python -m cxr bench --time-to", description=__doc__.split("\n\n")[0])
    p.add_argument("--time-to", required=True, help="validation accuracies to time, e.g. 0.85,0.90")
    p.add_argument("--runs", default="plain,fast-cpu-v1,fast-cpu", help=f"comma list of plain, {', '.join(LEGACY)} and presets")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=float, default=180.0, help="seconds each run may take (default 180)")
    p.add_argument("--data", help="dataset folder (default: the real-image sample, $CXR_SAMPLE or ../shared/cxr-sample "
                   "beside the project)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--float32", action="store_true", help="no bfloat16 on the CPU, as on one without AMX/AVX512-BF16")
    p.add_argument("--as-avx2", action="store_true",
                   help="run as an AVX2-only CPU would: float32, and torch, oneDNN and MKL kept to AVX2 instructions")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print("RESULT " + json.dumps(run_one(**spec)), flush=True)
        return 0
    try:
        thresholds = sorted(float(v) for v in args.time_to.split(","))
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError:
        p.error("--time-to takes accuracies such as 0.85,0.90 and --seeds whole numbers such as 0,1,2")
    if not all(0 < th <= 1 for th in thresholds) or args.budget <= 0:
        p.error("thresholds must lie in (0, 1] and the budget must be positive")
    names = args.runs.split(",")
    for name in names:
        if name != "plain" and name not in PRESETS and name not in LEGACY:
            p.error(f"unknown run {name!r}; use plain, {', '.join(LEGACY)} or one of {', '.join(PRESETS)}")
    data = args.data or str(SAMPLE_DATA)
    if not Path(data).is_dir():
        p.error(f"dataset folder {data} does not exist")
    if Path(args.out).exists() and not Path(args.out).is_dir():  # found now, not after the runs
        p.error(f"--out {args.out} is a file; give a folder for the results")
    result: dict[str, Any] = {"data": data, "device": args.device, "float32": args.float32, "budget_s": args.budget,
                              "thresholds": thresholds, "seeds": seeds, "runs": {}, "settings": {}, "load": []}
    env = worker_env()
    if args.as_avx2:  # what a free Space or a school laptop often is: no AVX-512, no AMX, no bfloat16
        env.update(AVX2_ONLY)
        result["float32"], result["as_avx2"] = True, AVX2_ONLY
    for name in names:
        runs = []
        for seed in seeds:
            print(f"training: {name}, seed {seed} (budget {args.budget:.0f} s) ...", file=sys.stderr, flush=True)
            spec = {"name": name, "data": data, "seed": seed, "budget": args.budget, "device": args.device,
                    "float32": result["float32"]}
            load = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, "-m", "cxr.bench.speedrun", "--time-to", "1", "--worker", json.dumps(spec)],
                                  capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise RuntimeError(f"run {name} seed {seed} failed: {proc.stderr.strip()[-2000:]}")
            runs.append(json.loads(lines[-1][7:]))
            result["load"].append({"run": name, "seed": seed, "load_before": load, "load_after": os.getloadavg()[0]})
        result["runs"][name] = runs
        result["settings"][name] = summarise(runs, thresholds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "time-to-accuracy.json").write_text(json.dumps(result, indent=2))
    png = plot(result, out / "time-to-accuracy.png")
    print(table(result))
    print(f"\nplot: {png}\nJSON: {out / 'time-to-accuracy.json'}\n1-minute load average before/after each run: "
          + ", ".join(f"{x['load_before']:.1f}/{x['load_after']:.1f}" for x in result["load"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
