"""Load test: a class of students classifying X-rays while the teacher's model trains.

    python -m benchmarks.loadgen [--clients 16] [--requests 10] [--memory-requests 500]
    python -m benchmarks.loadgen --class [--students 30] [--per-student 3] [--gap 6] [--no-class]

Starts `python app.py` on a synthetic dataset in a temporary folder (its own process, as on a Space), trains a small
checkpoint through the app's API, starts a long training run, then sends `clients` x `requests` classify requests
through gradio_client at once and prints errors and latency (p50, p95, max). Then it stops training and sends
`memory-requests` more, printing the server's resident memory along the way: it must stay flat (no leaked hooks,
figures or images). Exit status 1 if any request failed or memory grew by more than --max-growth-mb.
With --url it loads an already running app instead (give --checkpoint, the name of one of its checkpoints).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Settings by name, as the public API takes them (any left out keep the preset's values).
SETTINGS_SMALL = dict(preset="fast-cpu", image_size=128, batch_size=16, lr=1e-3, epochs=100, max_steps=4, eval_every=2,
                      target_accuracy=0.99, time_budget_s=0, augment=["hflip"], weights="none", seed=0, teacher_key="")
SETTINGS_LONG = {**SETTINGS_SMALL, "lr": 1e-7, "epochs": 1000, "max_steps": 0, "eval_every": 5}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_training(client, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = client.predict(api_name="/training_status")
        if state["status"] in ("done", "failed"):
            return state["text"]
        time.sleep(1)
    raise RuntimeError("training did not finish in time")


def classify_load(url: str, images: list[Path], checkpoint: str, clients: int, requests: int) -> dict:
    """`clients` threads, each its own gradio_client, each sending `requests` classify calls one after another."""
    from gradio_client import Client, handle_file

    def one_client(seed: int) -> tuple[list[float], list[str]]:
        client, rng = Client(url, verbose=False), random.Random(seed)
        times, errors = [], []
        for _ in range(requests):
            t = time.perf_counter()
            try:
                client.predict(handle_file(str(rng.choice(images))), checkpoint, "predicted class", 0.45,
                               api_name="/classify")
                times.append(time.perf_counter() - t)
            except Exception as e:  # count every failure, whatever it is
                errors.append(f"{type(e).__name__}: {e}")
        return times, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - start
    times = sorted(t for r in results for t in r[0])
    errors = [e for r in results for e in r[1]]
    pct = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000 if times else float("nan")  # noqa: E731
    return {"requests": clients * requests, "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": statistics.median(times) * 1000 if times else float("nan"), "p95_ms": pct(0.95),
            "max_ms": times[-1] * 1000 if times else float("nan"), "seconds": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=10, help="classify requests per client")
    p.add_argument("--memory-requests", type=int, default=500)
    p.add_argument("--max-growth-mb", type=float, default=100.0)
    p.add_argument("--url", help="load a running app instead of starting one")
    p.add_argument("--checkpoint", help="with --url: the checkpoint name to classify with")
    p.add_argument("--class", dest="klass", action="store_true",
                   help="a class on the real sample while the starter trains (see benchmarks/classload.py)")
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--per-student", type=int, default=3)
    p.add_argument("--gap", type=float, default=6.0, help="seconds between one student's X-rays")
    p.add_argument("--alone", type=float, default=20.0, help="seconds the run's pace is measured alone first")
    p.add_argument("--no-class", action="store_true", help="with --class: the same starter run, nobody classifying")
    p.add_argument("--idle", type=int, default=0, help="with --class: then N requests in a row on the idle server")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "cxr-sample"))
    args = p.parse_args(argv)
    if args.klass:
        from benchmarks import classload

        return classload.main(args)
    from gradio_client import Client

    from cxr.data.synthetic import make_synthetic
    from tests.demo_fixtures import start_app, wait_http

    tmp = Path(tempfile.mkdtemp(prefix="cxr-load-"))
    data = make_synthetic(tmp / "data", per_class=30, size=256, classes=("covid", "normal", "viral"))
    images = sorted(data.glob("*/images/*.png"))
    server = None
    try:
        if args.url:
            url, checkpoint = args.url, args.checkpoint
            if not checkpoint:
                p.error("--url needs --checkpoint")
        else:
            server, url = start_app(["--data", str(data), "--no-starter"], {"CXR_CHECKPOINTS": str(tmp / "checkpoints")})
            wait_http(url, server)
            client = Client(url, verbose=False)
            client.predict(**SETTINGS_SMALL, api_name="/start_training")
            print("small model:", _wait_training(client).split(":")[0])
            checkpoint = next(p.name for p in sorted((tmp / "checkpoints").glob("*.pt")) if not p.stem.endswith("-last"))
            client.predict(**SETTINGS_LONG, api_name="/start_training")
            time.sleep(3)
            print("a training run is going while the class classifies")
        cpu0 = (_cpu_seconds(server.pid) if server else float("nan"), time.process_time())
        load = classify_load(url, images, checkpoint, args.clients, args.requests)
        print(f"{load['requests']} classify requests from {args.clients} clients in {load['seconds']:.1f} s: "
              f"{load['errors']} errors; latency p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms, "
              f"max {load['max_ms']:.0f} ms")
        if server is not None:  # clients and server share this machine's cores: say who used them
            per = lambda a, b: (b - a) / load["requests"] * 1000  # noqa: E731
            print(f"CPU time per request on this machine: server {per(cpu0[0], _cpu_seconds(server.pid)):.0f} ms "
                  f"(training included), the load clients {per(cpu0[1], time.process_time()):.0f} ms")
        for e in load["first_errors"]:
            print("  error:", e)
        growth = 0.0
        if server is not None and args.memory_requests:
            client.predict(teacher_key="", api_name="/stop_training")
            _wait_training(client)
            classify_load(url, images, checkpoint, 2, 25)  # warm-up: caches and allocator pools fill here
            marks = [_rss_mb(server.pid)]
            per_round = max(1, args.memory_requests // 4)
            for _ in range(4):
                classify_load(url, images, checkpoint, 4, max(1, per_round // 4))
                marks.append(_rss_mb(server.pid))
            growth = marks[-1] - marks[0]
            print(f"server memory over {args.memory_requests} more requests: "
                  + " -> ".join(f"{m:.0f}" for m in marks) + f" MB (growth {growth:+.0f} MB)")
        return 1 if load["errors"] or growth > args.max_growth_mb else 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
