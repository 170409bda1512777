"""The measurements that need no training run: the ceiling and the cost per image. `matmul_peak` times a large
matmul (the GFLOP/s convolutions are measured against), `train_flops_per_image` counts one training step's FLOPs,
`compute_only` times training steps on random tensors (no data, no evaluation), and `latency` times a bare
forward pass, predict and Grad-CAM per image at batch 1. `cxr.bench.throughput` runs them beside the trainings.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from cxr.bench.measure import p50_p95
from cxr.data.index import index_dataset, split_dataset
from cxr.train.model import build_model, freeze_layers, set_train_mode


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096, reps: int = 5) -> float:
    """GFLOP/s of a large square matmul: the ceiling convolutions are measured against (best of `reps`)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    try:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        best = math.inf
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32  # the caller's setting back
    return 2 * n**3 / best / 1e9


def train_flops_per_image(image_size: int, freeze: str = "none", batch: int = 2) -> float:
    """FLOPs of one training step per image (forward + backward), counted by PyTorch's FlopCounterMode."""
    model, _ = build_model(3, "none")
    if freeze != "none":
        freeze_layers(model, freeze)
    set_train_mode(model)
    x, y = torch.randn(batch, 3, image_size, image_size, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta")
    model.to("meta")
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def compute_only(device: torch.device, image_size: int, batch: int, channels_last: bool, steps: int, amp: bool) -> dict:
    """Training steps on random tensors (no data, no evaluation): how close the convolutions get to the peak."""
    model, _ = build_model(3, "none")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 3, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    per_step = statistics.median(times)
    flops = train_flops_per_image(image_size)
    return {"image_size": image_size, "batch": batch, "channels_last": channels_last, "amp": amp,
            "images_per_sec": batch / per_step, "gflops": flops * batch / per_step / 1e9}


def latency(data: str, device: torch.device, image_size: int, count: int, reps: int) -> dict:
    """Per-image milliseconds (p50, p95) of a bare forward, predict, Grad-CAM and predict + Grad-CAM."""
    from cxr.train.checkpoint import save_checkpoint
    from cxr.predict import Classifier

    index = index_dataset(data)
    files = [index.files[i] for i in split_dataset(index).test[:count]]
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = build_model(3, "none")
        path = save_checkpoint(Path(tmp) / "lat.pt", model, index.classes, image_size, {}, {})
        clf = Classifier(path, device)
    x = clf.model_input(Image.open(files[0]).convert("L"))
    timings: dict[str, list[float]] = {"forward": [], "gradcam": [], "predict": [], "predict_gradcam": []}
    jobs = {
        "forward": lambda f: clf.model(x),
        "gradcam": lambda f: clf.gradcam(x),
        "predict": lambda f: clf.predict(f),
        "predict_gradcam": lambda f: clf.predict(f, explain=True),
    }
    with torch.inference_mode():
        clf.model(x)
    for rep in range(reps + 1):
        for f in files:
            for name, job in jobs.items():  # interleaved, so load spikes hit every measurement alike
                sync(device)
                t = time.perf_counter()
                if name == "forward":
                    with torch.inference_mode():
                        job(f)
                else:
                    job(f)
                sync(device)
                if rep:  # the first pass warms caches and is not counted
                    timings[name].append((time.perf_counter() - t) * 1000)
    out = {"image_size": image_size}
    for name, ts in timings.items():
        out[name] = p50_p95(ts)
    out["gradcam_over_forward"] = out["gradcam"]["p50_ms"] / out["forward"]["p50_ms"]
    out["predict_gradcam_over_predict"] = out["predict_gradcam"]["p50_ms"] / out["predict"]["p50_ms"]
    out["predict_gradcam_over_forward"] = out["predict_gradcam"]["p50_ms"] / out["forward"]["p50_ms"]
    return out
