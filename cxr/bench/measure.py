"""Small measuring helpers shared by training, the benchmark, `predict` and the app: peak memory, percentiles of
timings, and durations in words. One place, so every screen and log writes a figure the same way."""

from __future__ import annotations

import os
import resource
import statistics
from pathlib import Path

import torch


def peak_memory_mb(device: "torch.device | str" = "cpu") -> float:
    """The most memory this process has held: GPU memory allocated by torch on CUDA, resident set size on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def p50_p95(values: list[float]) -> dict[str, float]:
    """Median and 95th percentile of timings given in milliseconds (keys p50_ms, p95_ms)."""
    if not values:
        raise ValueError("p50_p95 needs at least one timing")
    ordered = sorted(values)
    return {"p50_ms": statistics.median(ordered), "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]}


def format_duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '1 h 02 min': how long something took or has left, for people."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def worker_env() -> dict[str, str]:
    """The environment for a benchmark's worker process (`python -m cxr...`): this one, with the project first on
    PYTHONPATH and the caller's own entries kept (a package installed beside it, e.g. with --target)."""
    paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
