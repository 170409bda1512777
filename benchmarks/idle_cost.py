"""What one student waits for on an idle server, and how long the server takes to start, at two commits side by side.

    python -m benchmarks.idle_cost CHECKPOINT [--before DIR] [--rounds 2] [--n 40] [--data DIR]

Starts `python app.py --data DATA --no-starter` from this project and, with --before, from another checkout of it
(e.g. `git worktree add /tmp/before COMMIT`), in turns, `rounds` times each: seconds until the server answers
HTTP, then `n` Classify requests in a row from one page (after three to warm up), as the page makes them (upload,
call, read the stream, fetch the overlay: `benchmarks.classload.classify_once`), and prints the wall time and the
server's CPU time per request. Both servers get a copy of CHECKPOINT as their only model. Taking turns in one run
lets a noisy, shared machine move both alike: compare the ratio. A measurement script, not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.classload import classify_once
from benchmarks.loadgen import _cpu_seconds
from tests.demo_fixtures import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent


def one_server(root: Path, data: Path, checkpoint: Path, n: int) -> dict[str, float]:
    """Start the app from `root`, time its start and `n` classify requests in a row; stop it."""
    with tempfile.TemporaryDirectory(prefix="cxr-idle-") as tmp:
        folder = Path(tmp) / "checkpoints"
        folder.mkdir()
        shutil.copy(checkpoint, folder / checkpoint.name)
        port = free_port()
        env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
               "CXR_CHECKPOINTS": str(folder), "GRADIO_TEMP_DIR": str(Path(tmp) / "gradio"),
               "CXR_CACHE_DIR": str(Path(tmp) / "cache")}
        t0 = time.perf_counter()
        server = subprocess.Popen([sys.executable, "app.py", "--data", str(data), "--no-starter"], cwd=root, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/", server, timeout=300)
            start = time.perf_counter() - t0
            images, rng = sorted(data.glob("*/images/*.png")), random.Random(1)
            walls = []
            with httpx.Client(timeout=120) as client:
                for _ in range(3):  # warm-up: the first requests load the model and build the kernels
                    classify_once(client, base, rng.choice(images), checkpoint.name, "idle")
                c0 = _cpu_seconds(server.pid)
                for _ in range(n):
                    t = time.perf_counter()
                    classify_once(client, base, rng.choice(images), checkpoint.name, "idle")
                    walls.append(time.perf_counter() - t)
                cpu = _cpu_seconds(server.pid) - c0
        finally:
            server.terminate()
            server.wait(60)
    return {"start_s": start, "wall_ms_p50": statistics.median(walls) * 1000,
            "wall_ms_mean": statistics.fmean(walls) * 1000, "cpu_ms": cpu / n * 1000}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--before", type=Path, help="another checkout of the project to compare with")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "cxr-sample")
    args = p.parse_args(argv)
    roots = {"this": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'checkout':8}  {'round':5}  {'start s':>7}  {'classify p50 ms':>15}  {'mean ms':>7}  {'server CPU ms':>13}")
    for r in range(args.rounds):
        for name, root in (roots.items() if r % 2 == 0 else reversed(roots.items())):
            m = one_server(root, args.data.resolve(), args.checkpoint.resolve(), args.n)
            print(f"{name:8}  {r:5}  {m['start_s']:7.1f}  {m['wall_ms_p50']:15.0f}  {m['wall_ms_mean']:7.0f}  "
                  f"{m['cpu_ms']:13.0f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
