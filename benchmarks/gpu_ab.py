"""Whole GPU-preset runs of two versions of this project side by side, on one CUDA machine, alternating.

    git worktree add /tmp/cxr-old <commit>      # the version to compare against
    python -m benchmarks.gpu_ab /tmp/cxr-old [--rounds 2] [--copies 28] [--epochs 5]

Each run is `benchmarks.gpu_speed.whole_run` (5 epochs of the GPU preset at batch 256 on the synthetic set linked
`--copies` times: 21,000 files to decode), in a fresh process started in that version's folder, so each imports
its own `cxr`. Rounds alternate old, new, old, new, so a machine that speeds up or slows down hits both alike.
Prints one line per run: first step, epoch ends, whole run, steady training images/s, and where the loop's time
went (evaluation, attention strip, checkpoints in the loop and, where the version has it, writing aside).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from cxr.data.synthetic import make_synthetic
from benchmarks.gpu_speed import link_copies

ROOT = Path(__file__).resolve().parent.parent


def run_in(folder: Path, data: Path, epochs: int, device: str) -> dict | None:
    code = ("import json; from pathlib import Path; from benchmarks.gpu_speed import whole_run; "
            f"print('RESULT', json.dumps(whole_run(Path({str(data)!r}), {epochs}, 256, {device!r}, False)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        print(f"{folder}: failed\n{out.stderr[-1500:]}", flush=True)
        return None
    return json.loads(lines[0][len("RESULT "):])


def line(label: str, r: dict) -> str:
    ends = ", ".join(f"{v:.1f}" for v in r["epoch_end_s"].values())
    nan = float("nan")
    return (f"{label}: first step {r['first_step_s']:.1f} s, epochs end {ends}, total {r['total_s']:.1f} s, steady "
            f"{r['steady_train_images_per_s_epochs_2_on']:.0f} img/s, eval {r['eval_s']:.2f}, attention "
            f"{r['attention_s']:.2f}, checkpoint in loop {r.get('checkpoint_s', nan):.2f}, writing aside "
            f"{r.get('writing_s', nan):.2f}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("old", type=Path, help="a checkout of the version to compare against (e.g. a git worktree)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--copies", type=int, default=28)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp())
    syn = make_synthetic(work / "synthetic", per_class=250, size=299, classes=("covid", "normal", "viral"))
    print("linked files:", link_copies(syn, work / "linked", args.copies), flush=True)
    for f in syn.glob("*/images/*.png"):  # every run reads warm files: the first must not pay for the disk
        f.read_bytes()
    for _ in range(args.rounds):
        for label, folder in (("old", args.old.resolve()), ("new", ROOT)):
            r = run_in(folder, work / "linked", args.epochs, args.device)
            if r is not None:
                print(line(label, r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
