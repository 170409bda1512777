"""Memory probe (issue 10, point 4): what the largest accepted images and a class uploading big PNGs cost.

    python -m benchmarks.memprobe [--uploads 60] [--skip-decode] [--skip-server] [--arena-max N]

Part 1, decode: for each of the largest files `read_xray` accepts (PNG and DICOM at the 120-megapixel limit), a
fresh subprocess loads a classifier, warms it up on a small image, then reads the big file through
`Classifier.predict(explain=True)` and prints its resident memory just before and at peak (VmHWM, the kernel's
ru_maxrss of that process alone).

Part 2, server: starts the app in its own process on a synthetic dataset, sends `uploads` concurrent classify
requests with ~19 MB PNGs through gradio_client, and prints the server's resident memory (VmRSS) before, at peak,
30 s later, and after malloc_trim(0); then a second batch, to tell a leak (it grows again) from memory the allocator
keeps (it plateaus). The app is started through a tiny wrapper that calls glibc's malloc_trim(0) on SIGUSR1, so
the app itself is unchanged. A measurement script, not a test: it takes a few minutes and prints figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter per file, so one measurement's allocations never count in another's peak.
CHILD = """
import json, sys, time
from cxr.train.checkpoint import load_checkpoint
from cxr.predict import Classifier
ckpt, warm, path = sys.argv[1:4]
def rss_mb(field='VmRSS'):  # VmHWM is the peak; unlike ru_maxrss it does not inherit the parent's peak
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
clf = Classifier(load_checkpoint(ckpt))
clf.predict(warm, explain=True)  # first-call allocations (kernels, caches) are not the big image's
before, peak_before = rss_mb(), rss_mb('VmHWM')
t = time.perf_counter()
pred = clf.predict(path, explain=True)
print(json.dumps({"before_mb": before, "peak_before_mb": peak_before, "seconds": time.perf_counter() - t,
                  "peak_mb": rss_mb('VmHWM'), "after_mb": rss_mb(),
                  "shown": list(pred.image.size)}))
"""

# The app, unchanged, with two additions only this probe uses: SIGUSR1 asks glibc to hand freed memory back, and
# the number of distinct threads that have run the model is written to $CXR_PROBE_THREADS on each prediction
# (torch keeps memory per thread that runs it, so that number matters).
SERVER = """
import ctypes, os, runpy, signal, sys, threading
import cxr.predict
libc = ctypes.CDLL("libc.so.6")
signal.signal(signal.SIGUSR1, lambda *_: libc.malloc_trim(0))
seen = set()
def counting(plain):
    def counted(self, *args, **kwargs):
        seen.add(threading.get_ident())
        with open(os.environ["CXR_PROBE_THREADS"], "w") as f:
            f.write(str(len(seen)))
        return plain(self, *args, **kwargs)
    return counted
# The app's classify runs the model in one batching worker (`explain_batch`); the CLI and tests call `predict`.
for name in ("predict", "explain_batch"):
    setattr(cxr.predict.Classifier, name, counting(getattr(cxr.predict.Classifier, name)))
sys.argv = ["app.py", *sys.argv[1:]]
runpy.run_path("app.py", run_name="__main__")
"""


def status_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ramp(side: int, dtype=np.uint8, top: int = 255) -> np.ndarray:
    """A side x side diagonal ramp (content everywhere, compresses well), built a row band at a time."""
    out = np.empty((side, side), dtype)
    cols = np.arange(side, dtype=np.float32)
    for r0 in range(0, side, 1024):
        rows = np.arange(r0, min(side, r0 + 1024), dtype=np.float32)[:, None]
        out[r0:r0 + len(rows)] = ((rows + cols) * (top / (2 * side - 2))).astype(dtype)
    return out


def write_limit_files(folder: Path) -> dict[str, Path]:
    """The largest images read_xray accepts: 120 megapixels (every DICOM frame and colour sample counted)."""
    from cxr.data.images import MAX_PIXELS
    from tests.imagefiles import _dicom_dataset

    side, rgb_side = math.isqrt(MAX_PIXELS), math.isqrt(MAX_PIXELS // 3)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files[f"PNG 8-bit gray {side}x{side}"] = folder / "gray8.png"
    Image.fromarray(ramp(side), "L").save(files[f"PNG 8-bit gray {side}x{side}"], compress_level=1)
    files[f"PNG 16-bit gray {side}x{side}"] = folder / "gray16.png"
    Image.fromarray(ramp(side, np.uint16, 65535)).save(files[f"PNG 16-bit gray {side}x{side}"], compress_level=1)
    files[f"PNG RGB {side}x{side}"] = folder / "rgb.png"
    Image.fromarray(ramp(side), "L").convert("RGB").save(files[f"PNG RGB {side}x{side}"], compress_level=1)
    for label, syntax, fname in [(f"DICOM 16-bit gray {side}x{side}", "ExplicitVRLittleEndian", "gray16.dcm"),
                                 (f"DICOM 16-bit gray {side}x{side} deflated", "DeflatedExplicitVRLittleEndian",
                                  "deflated.dcm")]:
        pixels = ramp(side, np.uint16, 4095)
        ds = _dicom_dataset(pixels, syntax)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / fname, enforce_file_format=True)
        files[label] = folder / fname
        del ds, pixels
    rgb = np.repeat(ramp(rgb_side)[..., None], 3, axis=2)
    ds = _dicom_dataset(rgb, "ExplicitVRLittleEndian")
    ds.PixelData = rgb.tobytes()
    ds.save_as(folder / "rgb.dcm", enforce_file_format=True)
    files[f"DICOM RGB 8-bit {rgb_side}x{rgb_side}"] = folder / "rgb.dcm"
    return files


def train_checkpoint(data: Path, out: Path) -> Path:
    from cxr.train.events import Done
    from cxr.train.loop import fit
    from tests.conftest import tiny_config

    done = list(fit(tiny_config(data, out, image_size=224, max_steps=2)))[-1]
    assert isinstance(done, Done)
    return Path(done.checkpoint)


def probe_decode(tmp: Path, ckpt: Path, warm: Path) -> None:
    print("== decode: the largest accepted files through Classifier.predict(explain=True), a fresh process each")
    for label, path in write_limit_files(tmp / "limit").items():
        proc = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(warm), str(path)], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode:
            print(f"{label}: failed: {proc.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{label} ({path.stat().st_size / 1e6:.1f} MB file): RSS {r['before_mb']:.0f} MB before, peak "
              f"{r['peak_mb']:.0f} MB (+{r['peak_mb'] - max(r['before_mb'], r['peak_before_mb']):.0f} MB), "
              f"{r['after_mb']:.0f} MB after; {r['seconds']:.1f} s")
        path.unlink()


def big_pngs(folder: Path, count: int, side: int = 4350) -> list[Path]:
    """~19 MB PNGs (noise does not compress), under the app's 20 MB upload limit. Each request gets its own file:
    gradio stores identical uploads once, and the app deletes an upload after reading it."""
    paths = []
    for k in range(count):
        arr = np.random.default_rng(k).integers(0, 256, (side, side), dtype=np.uint8)
        paths.append(folder / f"big-{k}.png")
        Image.fromarray(arr, "L").save(paths[-1], compress_level=1)
    return paths


def probe_server(tmp: Path, data: Path, ckpt: Path, uploads: int, arena_max: int | None,
                 log: Path | None = None) -> None:
    from gradio_client import Client, handle_file

    from tests.demo_fixtures import free_port, wait_http

    images = big_pngs(tmp, uploads)
    print(f"== server: {uploads} concurrent classify requests with {images[0].stat().st_size / 1e6:.1f} MB PNGs "
          f"({Image.open(images[0]).size[0]}x{Image.open(images[0]).size[1]})"
          + (f", MALLOC_ARENA_MAX={arena_max}" if arena_max else ""))
    (tmp / "checkpoints").mkdir(exist_ok=True)
    (tmp / "checkpoints" / "probe.pt").write_bytes(ckpt.read_bytes())
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "CXR_CHECKPOINTS": str(tmp / "checkpoints"), "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "CXR_PROBE_THREADS": str(tmp / "threads.txt")}
    if arena_max:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    out = open(log, "w") if log else subprocess.DEVNULL
    server = subprocess.Popen([sys.executable, "-c", SERVER, "--data", str(data)], env=env, cwd=ROOT,
                              stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, server)
        Client(url, verbose=False).predict(handle_file(str(data.glob("*/images/*.png").__next__())), "probe.pt",
                                           "predicted class", 0.45, api_name="/classify")  # warm-up: small image
        time.sleep(2)
        rss = lambda: status_mb(server.pid)  # noqa: E731
        print(f"before: {rss():.0f} MB (after one small warm-up request)")
        for batch in (1, 2):
            peak, errors, seconds = send_batch(url, images, uploads, server.pid)
            threads = (tmp / "threads.txt").read_text()
            print(f"batch {batch}: {uploads - errors}/{uploads} answered in {seconds:.0f} s; peak {peak:.0f} MB; "
                  f"right after {rss():.0f} MB; the model has run on {threads} distinct threads so far")
            time.sleep(30)
            print(f"batch {batch}: 30 s later {rss():.0f} MB")
            os.kill(server.pid, signal.SIGUSR1)
            time.sleep(3)
            print(f"batch {batch}: after malloc_trim(0) {rss():.0f} MB")
    finally:
        server.terminate()
        server.wait(30)


def send_batch(url: str, images: list[Path], n: int, pid: int) -> tuple[float, int, float]:
    """n clients at once, one classify request each; returns (peak server RSS in MB, errors, seconds)."""
    from gradio_client import Client, handle_file

    peak, done = [status_mb(pid)], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(status_mb(pid))
            time.sleep(0.05)

    def one(k: int) -> bool:
        try:
            client = Client(url, verbose=False, httpx_kwargs={"timeout": 600}, download_files=False)  # a long queue
            client.predict(handle_file(str(images[k % len(images)])), "probe.pt", "predicted class", 0.45,
                           api_name="/classify")
            return True
        except Exception as e:  # count every failure, whatever it is
            print(f"  request {k}: {type(e).__name__}: {e}")
            return False

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        ok = list(pool.map(one, range(n)))
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    return max(peak), ok.count(False), seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uploads", type=int, default=60)
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--skip-server", action="store_true")
    p.add_argument("--arena-max", type=int, help="start the server with MALLOC_ARENA_MAX set to this")
    p.add_argument("--server-log", type=Path, help="write the server's output here (default: discard it)")
    args = p.parse_args(argv)
    from cxr.data.synthetic import make_synthetic

    tmp = Path(tempfile.mkdtemp(prefix="cxr-memprobe-"))
    try:
        data = make_synthetic(tmp / "data", per_class=12, size=256, classes=("covid", "normal", "viral"))
        ckpt = train_checkpoint(data, tmp / "probe-train.pt")
        warm = next(data.glob("*/images/*.png"))
        if not args.skip_decode:
            probe_decode(tmp, ckpt, warm)
        if not args.skip_server:
            probe_server(tmp, data, ckpt, args.uploads, args.arena_max, args.server_log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
