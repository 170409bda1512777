"""The benchmark: training and inference speed, measured side by side in one run on one machine.

`python -m cxr bench` trains the plain recipe (the course's class-folder Dataset that opens every PNG each time,
Resize 224, flip, Normalize, batch 6, a single-process DataLoader, 90 validation images every 20 steps) and each
preset on the same split for the same number of images, each in its own process so peak memory is its own. It
reports images/s (wall clock, evaluation included, and training alone), the ratio to the recipe, test accuracy
after those images, the share of wall time in evaluation and in data loading, FLOP/s against a large matmul timed in
the same run, peak memory, and predict / Grad-CAM latency against a bare forward pass. It prints a table and
writes JSON. The machine is shared and noisy: compare the ratios within one run, not numbers across runs. The
measurements without a training run (matmul peak, FLOPs, compute only, latency) live in `cxr.bench.compute`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cxr.bench.baseline import run_plain_recipe
from cxr.bench.compute import compute_only, latency, matmul_peak, train_flops_per_image
from cxr.bench.measure import worker_env
from cxr.data.index import index_dataset
from cxr.train.config import SAMPLE_DATA
from cxr.train.events import Done, Step
from cxr.train.loop import fit
from cxr.train.presets import PRESETS, apply_preset
from cxr.train.run import autocast_dtype, resolve_device

def _steady(marks: list[tuple[float, int]]) -> float:
    """Images/s over the second half of a run (evaluations included): what a long run settles at, once one-time
    costs (first decoding, cuDNN autotuning, lazy kernel loading) are behind it."""
    if len(marks) < 2:
        return math.nan  # one step has no rate of its own: the table says nan rather than 0
    (t0, n0), (t1, n1) = marks[len(marks) // 2 if len(marks) >= 4 else 0], marks[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else math.nan


def run_preset(name: str, data: str, images: int, weights: str, seed: int, device: torch.device) -> dict:
    """A preset through `fit`, for `images` training images (never stopping early on the target)."""
    cfg = apply_preset(name)
    steps = math.ceil(images / cfg.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(cfg, data=data, weights=weights, seed=seed, max_steps=steps, epochs=10_000, target_accuracy=0.0,
                      time_budget_s=0.0,  # the same images for every run: throughput, not time to accuracy
                      device=str(device), out=str(Path(tmp) / "bench.pt"), save_last_every_s=1e9)
        marks = []
        for ev in fit(cfg):
            if isinstance(ev, Step):
                marks.append((time.perf_counter(), ev.step * cfg.batch_size))
            elif isinstance(ev, Done):
                done = ev
    return {"images": done.steps * cfg.batch_size, "steps": done.steps, "seconds": done.seconds,
            "marks": marks,
            "seconds_eval": done.seconds_eval, "seconds_data": done.seconds_data, "seconds_attention": done.seconds_attention,
            "train_images_per_sec": done.train_images_per_sec, "test_accuracy": done.test_accuracy,
            "image_size": cfg.image_size, "freeze": cfg.freeze, "peak_memory_mb": done.peak_memory_mb,
            "bf16": autocast_dtype(cfg, device) is not None}


def summarise(per_seed: list[dict]) -> dict:
    """One row of the table from a run's seeds: means, per-seed accuracy, worst peak memory, shares and FLOP/s."""
    r = {k: statistics.mean(x[k] for x in per_seed) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
         for k, v in per_seed[0].items()}
    r["test_accuracy_per_seed"] = [x["test_accuracy"] for x in per_seed]
    r["peak_memory_mb"] = max(x["peak_memory_mb"] for x in per_seed)
    r["images_per_sec"] = r["images"] / r["seconds"]
    r["eval_share"], r["data_share"] = r["seconds_eval"] / r["seconds"], r["seconds_data"] / r["seconds"]
    r["attention_share"] = r.get("seconds_attention", 0.0) / r["seconds"]  # the attention strip (plain recipe: none)
    r["gflop_per_image"] = train_flops_per_image(r["image_size"], r["freeze"]) / 1e9
    r["train_gflops"] = r["steady_images_per_sec"] * r["gflop_per_image"]  # conservative: evaluations included
    return r


def _worker(spec: dict) -> dict:
    device = torch.device(spec["device"])
    run = run_plain_recipe if spec["kind"] == "plain" else lambda *a: run_preset(spec["kind"], *a)
    result = run(spec["data"], spec["images"], spec["weights"], spec["seed"], device)
    result["steady_images_per_sec"] = _steady(result.pop("marks"))
    return result


def _in_subprocess(spec: dict) -> dict:
    """Run one training in a fresh process, so its peak memory and thread pools are its own."""
    proc = subprocess.run([sys.executable, "-m", "cxr.bench.throughput", "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=worker_env())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"benchmark run {spec['kind']} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][7:])


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def report(result: dict) -> str:
    """The benchmark's JSON as the tables the README and closing notes quote."""
    peak = result["matmul_peak_gflops"]
    bf16_peak = result.get("bf16_matmul_peak_gflops") or peak
    base = result["runs"]["plain recipe"]
    rows = [["run", "img/s", "steady img/s", "train img/s", "x recipe (steady)", "test acc (per seed)", "eval %", "data %",
             "attention %", "GFLOP/img", "GFLOP/s", "% peak*", "peak MB"]]
    for name, r in result["runs"].items():
        rows.append([name, f"{r['images_per_sec']:.1f}", f"{r['steady_images_per_sec']:.1f}",
                     f"{r['train_images_per_sec']:.1f}",
                     f"{r['images_per_sec'] / base['images_per_sec']:.2f} "
                     f"({r['steady_images_per_sec'] / base['steady_images_per_sec']:.2f})",
                     f"{r['test_accuracy']:.3f} ({', '.join(f'{a:.3f}' for a in r['test_accuracy_per_seed'])})", f"{100 * r['eval_share']:.1f}",
                     f"{100 * r['data_share']:.1f}", f"{100 * r.get('attention_share', 0.0):.1f}",
                     f"{r['gflop_per_image']:.2f}", f"{r['train_gflops']:.1f}",
                     f"{100 * r['train_gflops'] / (bf16_peak if r.get('bf16') else peak):.0f}",
                     f"{r['peak_memory_mb']:.0f}"])
    out = [f"device: {result['device']}  |  data: {result['data']}  |  {result['images']} training images per run, "
           f"seeds {','.join(map(str, result['seeds']))}  |  "
           f"weights: {result['weights']}  |  fp32 matmul peak {peak:.1f} GFLOP/s"
           + (f", bf16 {result['bf16_matmul_peak_gflops']:.1f}" if result.get("bf16_matmul_peak_gflops") else ""),
           "", _table(rows), "* GFLOP/s from steady img/s (evaluation included), against the matmul peak of the precision the "
           "run trains in (bf16 for AMP runs on a GPU, fp32 otherwise)", "",
           "compute only (random tensors, no data, no evaluation):"]
    rows = [["image", "batch", "layout", "amp", "img/s", "GFLOP/s", "% peak*"]]
    for r in result["compute_only"]:
        rows.append([str(r["image_size"]), str(r["batch"]), "channels_last" if r["channels_last"] else "contiguous",
                     "bf16" if r["amp"] else "fp32", f"{r['images_per_sec']:.1f}", f"{r['gflops']:.1f}",
                     f"{100 * r['gflops'] / (bf16_peak if r['amp'] else peak):.0f}"])
    out += [_table(rows), "", "latency per image, batch 1 (ms; forward: the model called directly; predict reads the "
            "file; Grad-CAM and predict, on a GPU, replay CUDA graphs):"]
    rows = [["image", "forward p50/p95", "predict p50/p95", "Grad-CAM p50/p95", "predict+CAM p50/p95", "CAM/forward",
             "predict+CAM/forward"]]
    for lat in result["latency"]:
        cell = lambda k: f"{lat[k]['p50_ms']:.1f} / {lat[k]['p95_ms']:.1f}"  # noqa: E731
        rows.append([str(lat["image_size"]), cell("forward"), cell("predict"), cell("gradcam"),
                     cell("predict_gradcam"), f"{lat['gradcam_over_forward']:.2f}",
                     f"{lat['predict_gradcam_over_forward']:.2f}"])
    out.append(_table(rows))
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    """`python -m cxr bench`'s flags (docs/cli.md is written from them)."""
    p = argparse.ArgumentParser(
        prog="python -m cxr bench", description=__doc__.split("\n\n")[0],
        epilog="With --time-to 0.85,0.90 it measures time to accuracy instead: seconds until each validation accuracy, "
               "per setting and seed, with --runs, --seeds, --budget and --float32 (python -m cxr bench --time-to 0.85 "
               "--help lists them; docs/benchmarks.md has the table it makes).")
    p.add_argument("--data", help="dataset folder (default: the real-image sample, $CXR_SAMPLE or ../shared/cxr-sample "
                   "beside the project, if present, else a synthetic one)")
    p.add_argument("--images", type=int, default=1800, help="training images per run (default 1800, ~3 epochs)")
    p.add_argument("--runs", default="plain,auto", help="comma list of plain and preset names; auto: the presets for this device")
    p.add_argument("--weights", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", default="0", help="comma list; each seed is a different split and initialisation, and "
                   "the table shows means (test accuracy on 90 images moves by several points from seed to seed)")
    p.add_argument("--latency-images", type=int, default=10)
    p.add_argument("--latency-reps", type=int, default=3)
    p.add_argument("--out", default="bench-results", help="folder for the JSON result")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--time-to" or a.startswith("--time-to=") for a in argv):  # the time-to-accuracy benchmark
        from cxr.bench.speedrun import main as speedrun_main

        return speedrun_main(argv)
    p = build_parser()
    args = p.parse_args(argv)
    if args.images < 1:
        p.error(f"--images must be at least 1, got {args.images}")
    if args.worker:
        print("RESULT " + json.dumps(_worker(json.loads(args.worker))), flush=True)
        return 0
    if Path(args.out).exists() and not Path(args.out).is_dir():  # found now, not after an hour of training
        p.error(f"--out {args.out} is a file; give a folder for the JSON result")

    device = resolve_device(args.device)
    data = args.data or (str(SAMPLE_DATA) if SAMPLE_DATA.is_dir() else "")
    if not data:
        from cxr.data.synthetic import make_synthetic

        data = str(make_synthetic(Path(tempfile.mkdtemp()) / "synthetic", per_class=250, size=299,
                                  classes=("covid", "normal", "viral")))
    names = []
    for name in args.runs.split(","):
        if name == "auto":
            names += ["gpu", "fast-cpu", "recipe"] if device.type == "cuda" else ["fast-cpu", "recipe"]
        elif name == "plain" or name in PRESETS:
            names.append(name)
        else:
            p.error(f"unknown run {name!r}; use plain, auto or one of {', '.join(PRESETS)}")
    try:
        index_dataset(data)  # a bad folder ends here with one sentence, not in the first worker
    except ValueError as e:
        p.error(str(e))
    if "plain" in names:
        names.remove("plain")
    names = ["plain"] + names  # the baseline always runs, first

    result: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                              f"cpu ({torch.get_num_threads()} threads)", "data": data, "images": args.images,
                              "weights": args.weights, "torch": str(torch.__version__), "runs": {}}
    result["matmul_peak_gflops"] = matmul_peak(device)
    if device.type == "cuda":
        result["bf16_matmul_peak_gflops"] = matmul_peak(device, torch.bfloat16, n=8192)
    seeds = [int(x) for x in args.seeds.split(",")]
    result["seeds"] = seeds
    for name in names:
        per_seed = []
        for seed in seeds:
            print(f"training: {name}, seed {seed} ...", file=sys.stderr, flush=True)
            spec = {"kind": name, "data": data, "images": args.images, "weights": args.weights, "seed": seed,
                    "device": str(device)}
            per_seed.append(_in_subprocess(spec))
        result["runs"]["plain recipe" if name == "plain" else name] = summarise(per_seed)
    print("compute only ...", file=sys.stderr, flush=True)
    cuda = device.type == "cuda"
    sweep = [(224, 256, True, True), (224, 256, False, True), (224, 64, True, False)] if cuda else \
        [(224, 16, True, False), (224, 32, False, False), (224, 32, True, False), (128, 16, False, False)]
    result["compute_only"] = [compute_only(device, s, b, cl, 20 if cuda else 4, amp) for s, b, cl, amp in sweep]
    print("latency ...", file=sys.stderr, flush=True)
    result["latency"] = [latency(data, device, size, args.latency_images, args.latency_reps) for size in (224, 128)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{device.type}.json"
    path.write_text(json.dumps(result, indent=2))
    print(report(result))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
