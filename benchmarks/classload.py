"""A class at work: students classifying real X-rays while the starter model trains, on the server's cores.

    python -m benchmarks.loadgen --class [--students 30] [--per-student 3] [--gap 6] [--data ../shared/cxr-sample]

Starts `python app.py` on the real sample with a teacher key and an empty checkpoints folder, so the starter run of
the machine's preset begins at once. When its first model lands, it measures the run's steps/s alone for
`--alone` seconds, then `students` students each classify `per-student` X-rays of the sample, `gap` seconds apart
(each starting at a random moment within the first gap), through the public HTTP API as a browser does: upload
the file, call /classify, read the answer's event stream, fetch the overlay image it names. It prints the errors,
latency p50 / p95 / max, the run's steps/s alone and while the class worked, the run's final test accuracy, and
the 1-minute load average. `--no-class` runs the same starter run with nobody classifying (the reference for the
test accuracy). The students are plain HTTP clients (a few ms of CPU per request), not gradio_client, whose
threads cost as much CPU as the server's work and would be charged to the run on a two-core machine.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

KEY = "class-load-teacher-key-0123456789"


def _status(base: str) -> dict:
    """/training_status through the HTTP API."""
    r = httpx.post(f"{base}/gradio_api/call/training_status", json={"data": []}, timeout=30)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    with httpx.stream("GET", f"{base}/gradio_api/call/training_status/{event_id}", timeout=30) as s:
        kind = ""
        for line in s.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "complete":
                return json.loads(line[5:])[0]
    raise RuntimeError("no status")


def classify_once(client: httpx.Client, base: str, image: Path, checkpoint: str, session: str | None = None) -> None:
    """One student's request as the page makes it: upload, call, read the stream, fetch the overlay. `session`: the
    page's session id (a browser keeps one per open page; without it every call is a new visitor)."""
    with image.open("rb") as f:
        r = client.post(f"{base}/gradio_api/upload", files={"files": (image.name, f, "image/png")})
    r.raise_for_status()
    path = r.json()[0]
    file_data = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": image.name}
    r = client.post(f"{base}/gradio_api/call/classify", json={"data": [file_data, checkpoint, "predicted class", 0.45],
                                                                "session_hash": session})
    r.raise_for_status()
    event_id = r.json()["event_id"]
    kind, payload = "", None
    with client.stream("GET", f"{base}/gradio_api/call/classify/{event_id}") as s:
        for line in s.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                payload = line[5:].strip()
                break
    if kind != "complete":
        raise RuntimeError(f"classify answered {kind}: {payload}")
    outputs = json.loads(payload)
    shown = next((o for o in outputs if isinstance(o, dict) and o.get("url")), None)
    if shown is None:
        raise RuntimeError("classify returned no image")
    client.get(shown["url"]).raise_for_status()


def run_class(base: str, images: list[Path], checkpoint: str, students: int, per_student: int, gap: float,
              seed: int = 0) -> dict:
    """Every student in a thread of their own; returns latencies (s) and errors."""
    rng = random.Random(seed)
    plans = [(rng.uniform(0, gap), rng.sample(images, per_student)) for _ in range(students)]
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def student(offset: float, mine: list[Path]) -> None:
        session = f"student-{offset:.6f}"  # one page per student, as in a browser
        with httpx.Client(timeout=120) as client:
            for k, image in enumerate(mine):
                time.sleep(max(0.0, t0 + offset + k * gap - time.perf_counter()))
                t = time.perf_counter()
                try:
                    classify_once(client, base, image, checkpoint, session)
                    with lock:
                        times.append(time.perf_counter() - t)
                except Exception as e:  # count every failure, whatever it is
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}"[:300])

    threads = [threading.Thread(target=student, args=plan) for plan in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"times": sorted(times), "errors": errors, "seconds": time.perf_counter() - t0}


def idle_cost(base: str, pid: int, images: list[Path], checkpoint: str, n: int) -> str:
    """`n` requests one after another from one page, on an idle server: wall time and the server's CPU per request."""
    from benchmarks.loadgen import _cpu_seconds

    rng = random.Random(1)
    with httpx.Client(timeout=60) as client:
        for _ in range(3):  # warm-up
            classify_once(client, base, rng.choice(images), checkpoint, "idle")
        c0, t0 = _cpu_seconds(pid), time.perf_counter()
        for _ in range(n):
            classify_once(client, base, rng.choice(images), checkpoint, "idle")
        c1, t1 = _cpu_seconds(pid), time.perf_counter()
    return f"idle server, {n} requests in a row: {(t1 - t0) / n * 1000:.0f} ms each, server CPU {(c1 - c0) / n * 1000:.0f} ms each"


def _steps_per_s(marks: list[tuple[float, int]], t_from: float, t_to: float) -> float:
    inside = [(t, s) for t, s in marks if t_from <= t <= t_to]
    if len(inside) < 2:
        return float("nan")
    (ta, sa), (tb, sb) = inside[0], inside[-1]
    return (sb - sa) / max(tb - ta, 1e-9)


def main(args) -> int:
    from tests.demo_fixtures import start_app, wait_http

    data = Path(args.data)
    images = sorted(data.glob("*/images/*.png"))
    if not images:
        raise SystemExit(f"no X-rays under {data}")
    tmp = Path(tempfile.mkdtemp(prefix="cxr-class-"))
    ckpts = tmp / "checkpoints"
    # The machine's own speed cache (cxr.train.plan): a class run and its --no-class reference plan alike.
    server, url = start_app(["--data", str(data), "--teacher-key", KEY], {"CXR_CHECKPOINTS": str(ckpts)})
    base = url.rstrip("/")
    marks: list[tuple[float, int]] = []
    stop_polling = threading.Event()
    try:
        wait_http(url, server)

        def poll() -> None:
            while not stop_polling.is_set():
                try:
                    st = _status(base)
                    if st.get("last_step"):
                        marks.append((time.perf_counter(), int(st["last_step"]["step"])))
                except Exception:
                    pass
                stop_polling.wait(2.0)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        deadline = time.time() + 600
        while time.time() < deadline and not [p for p in ckpts.glob("*.pt") if not p.stem.endswith("-last")]:
            time.sleep(0.5)
        checkpoint = next(p.name for p in sorted(ckpts.glob("*.pt")) if not p.stem.endswith("-last"))
        t_alone = time.perf_counter()
        time.sleep(args.alone)
        t_class = time.perf_counter()
        load0 = os.getloadavg()[0]
        result = None
        if not args.no_class:
            result = run_class(base, images, checkpoint, args.students, args.per_student, args.gap)
        t_end = time.perf_counter()
        load1 = os.getloadavg()[0]
        while True:  # the run's end and its test accuracy
            st = _status(base)
            if st["status"] in ("done", "failed"):
                break
            time.sleep(2)
        stop_polling.set()
        if args.idle:  # the run is over: what one request costs an idle server
            finished = next(p.name for p in sorted(ckpts.glob("*.pt")) if not p.stem.endswith("-last"))
            print(idle_cost(base, server.pid, images, finished, args.idle))
        alone = _steps_per_s(marks, t_alone, t_class)
        under = _steps_per_s(marks, t_class, t_end)
        done = st.get("done") or {}
        print(f"starter run: {st['status']}, {done.get('steps')} steps, test accuracy {done.get('test_accuracy')}, "
              f"image size {(st.get('started') or {}).get('image_size')} ({(st.get('started') or {}).get('plan')})")
        print(f"run steps/s alone {alone:.3f}" + ("" if result is None else
              f", under the class {under:.3f} ({under / alone:.0%} kept)"))
        if result is not None:
            ts = result["times"]
            pct = (lambda q: ts[min(len(ts) - 1, int(q * len(ts)))]) if ts else (lambda q: float("nan"))
            print(f"{args.students} students x {args.per_student} X-rays, {args.gap:g} s apart: {len(ts)} answered, "
                  f"{len(result['errors'])} errors; latency p50 {statistics.median(ts) if ts else float('nan'):.2f} s, "
                  f"p95 {pct(0.95):.2f} s, max {ts[-1] if ts else float('nan'):.2f} s; class took "
                  f"{result['seconds']:.0f} s; load average {load0:.1f} -> {load1:.1f}")
            for e in result["errors"][:3]:
                print("  error:", e)
            return 1 if result["errors"] else 0
        return 0
    finally:
        stop_polling.set()
        server.terminate()
        server.wait(30)
