"""The run's plan: which image size a time-budgeted run trains at, chosen from what this machine can do.

A preset with a time budget (Fast (CPU)) was tuned at one size (112 px), where it gets 500 to 700 steps in its
three minutes on a processor that multiplies bfloat16 in hardware. A processor with AVX2 only is three to five
times slower there, gets a quarter of the steps, and ends with a worse model than a smaller image trained for
longer would give. So a run with `auto_size` set times a few training steps at each size of its ladder, largest
first (random tensors, a throw-away model: a second or two), and trains at the largest size that gets `MIN_IMAGES`
training images through the model in the budget, or at the ladder's smallest. The timings are kept per machine in
a small cache file, so only a machine's first run pays for them. `Plan.reason` says what was chosen and why, in the
words the CLI, the Train tab and the model card show.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# Sizes a planned run may train at, largest first: each about two thirds of the pixels of the one before.
LADDER = (112, 96, 80, 64)
# Training images a budgeted run should see. On an AVX2-only CPU, 170 s of the Fast preset (seeds 0-2, sample)
# gave a mean test accuracy of 0.844 at 112 px (5,600 images), 0.900 at 80 px (10,300) and 0.915 at 64 px (12,800);
# on an AMX CPU 112 px gets 15,000 to 24,000 images and 0.89. The largest size with this many keeps the finest
# detail that still learns enough (docs/benchmarks.md, "Time to a good model").
MIN_IMAGES = 9_000
# What the loop keeps of the probe's pace: augmentation, evaluations and the attention strip cost the rest.
LOOP_SHARE = 0.85


@dataclass(frozen=True)
class Plan:
    """What a run trains at and why. `images_per_s`: measured training pace per size (random tensors)."""

    image_size: int
    reason: str
    images_per_s: dict[int, float] = field(default_factory=dict)
    expected_images: int = 0  # training images the budget should buy at `image_size`

    def to_dict(self) -> dict:
        return asdict(self)


def machine_key(device: torch.device, dtype: torch.dtype | None, channels_last: bool, batch: int) -> str:
    """What a timing depends on: the processor (or GPU), torch, its threads, the precision, layout and batch."""
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    else:
        chip = f"{_cpu_model()} {torch.backends.cpu.get_cpu_capability()}"  # ATEN_CPU_CAPABILITY changes the pace
    parts = [chip, torch.__version__, str(torch.get_num_threads()), str(dtype), str(channels_last), str(batch)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_file() -> Path:
    """Where timings are kept: $CXR_CACHE_DIR, else $XDG_CACHE_HOME/cxr, else ~/.cache/cxr."""
    root = os.environ.get("CXR_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cxr"
    return Path(root) / "speed.json"


def measure_speed(sizes: tuple[int, ...], batch: int, classes: int, device: torch.device,
                  dtype: torch.dtype | None = None, channels_last: bool = False, steps: int = 2) -> dict[int, float]:
    """Training images/s of ResNet18 at each size: one warm-up step, then the fastest of `steps` timed ones (forward,
    backward and an AdamW step on random tensors, as the loop does them). The caller's random state is untouched."""
    from torchvision.models import resnet18

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = resnet18(num_classes=classes).to(device, memory_format=fmt).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        speeds = {}
        for size in sizes:
            x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
            y = torch.randint(0, classes, (batch,), device=device)
            times = []
            for _ in range(steps + 1):  # the first is a warm-up (allocations, kernel choice), not timed
                _sync(device)
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _sync(device)
                times.append(time.perf_counter() - t0)
            # The fastest step: a probe run while the server is still starting must not plan for a busy machine.
            speeds[size] = batch / max(min(times[1:]), 1e-9)
    return speeds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_in(pace: float, budget_s: float) -> int:
    """Training images a run at `pace` (the probe's images/s) should see in `budget_s`."""
    return int(pace * LOOP_SHARE * budget_s)


def choose_size(speeds: dict[int, float], budget_s: float, ceiling: int, ladder: tuple[int, ...] = LADDER,
                min_images: int = MIN_IMAGES) -> tuple[int, int]:
    """The largest size (at most `ceiling`) whose measured pace gets `min_images` training images through the model
    in `budget_s`, else the smallest measured size; and how many images that size should see. `speeds` may lack
    the sizes below the first that qualifies (they are not measured)."""
    candidates = [s for s in ladder if s <= ceiling and s in speeds] or [min(speeds)]
    for size in candidates:
        images = images_in(speeds[size], budget_s)
        if images >= min_images:
            return size, images
    size = candidates[-1]
    return size, images_in(speeds[size], budget_s)


def sizes_to_measure(ceiling: int, ladder: tuple[int, ...] = LADDER) -> tuple[int, ...]:
    """The ceiling, then every ladder size below it, largest first."""
    return tuple([ceiling] + [s for s in ladder if s < ceiling])


def plan_size(*, ceiling: int, budget_s: float, batch: int, classes: int, device: torch.device,
              dtype: torch.dtype | None, channels_last: bool, cache: Path | None = None,
              measure=measure_speed) -> Plan:
    """Measure (or read from `cache`) this machine's pace at each size, largest first, stopping at the first size
    that gets enough images in the budget; then choose (see `choose_size`). `measure` is injectable for tests."""
    key = machine_key(device, dtype, channels_last, batch)
    known = _read_cache(cache).get(key, {}) if cache else {}
    speeds: dict[int, float] = {}
    for size in sizes_to_measure(ceiling):
        pace = known.get(str(size))
        if pace is None:
            pace = measure((size,), batch, classes, device, dtype, channels_last)[size]
        speeds[size] = float(pace)
        if images_in(speeds[size], budget_s) >= MIN_IMAGES:
            break
    if cache:
        _write_cache(cache, key, {**known, **{str(s): v for s, v in speeds.items()}})
    size, images = choose_size(speeds, budget_s, ceiling)
    return Plan(image_size=size, reason=_reason(speeds, size, ceiling, budget_s, images, device, dtype, batch),
                images_per_s=speeds, expected_images=images)


def _reason(speeds: dict[int, float], size: int, ceiling: int, budget_s: float, images: int,
            device: torch.device, dtype: torch.dtype | None, batch: int) -> str:
    what = "this GPU" if device.type == "cuda" else "this CPU"
    precision = "in bfloat16" if dtype is not None else ("without bfloat16" if device.type == "cpu" else "in float32")
    top = f"{what} trains {speeds[ceiling]:.0f} images/s at {ceiling} px {precision}"
    steps = images // max(batch, 1)
    if size == ceiling:
        return f"{top}: about {steps} steps in the {budget_s:.0f} s budget, so training at {ceiling} px"
    return (f"{top}, too few for a good model in {budget_s:.0f} s: training at {size} px "
            f"({speeds[size]:.0f} images/s, about {steps} steps)")


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, speeds: dict[str, float]) -> None:
    """Best effort: a read-only home only means the next run measures again."""
    data = _read_cache(path)
    data[key] = speeds
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        pass
