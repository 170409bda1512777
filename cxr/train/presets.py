"""Named training settings: what each trades, so a teacher can pick one without reading the code.

A preset is a set of TrainConfig overrides. The benchmark (`python -m cxr bench`) measures them side by side
against the plain recipe; the numbers in the descriptions come from it (see docs/benchmarks.md).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from cxr.train.config import TrainConfig
from cxr.errors import UserError
from cxr.data.transforms import AugmentConfig

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
DECODERS = max(1, min(64, CORES - 1))  # every core but the training loop's

PRESETS: dict[str, dict[str, Any]] = {
    # Two CPU cores, chosen by time to accuracy (`python -m cxr bench --time-to`, docs/benchmarks.md): 112 px (a quarter of
    # the recipe's pixels), batches of 32, AdamW with a one-cycle schedule over a 170 s budget (warm up for 15 %,
    # then anneal to zero, keeping the weights at the end), mirror images with a slight zoom and shift (the
    # stronger augmentations slowed learning more than they helped in so short a run), a check every 40 steps,
    # channels-last convolutions (1.3x the images/s of the default layout on this CPU) and bfloat16 where the CPU
    # multiplies it in hardware (AMX / AVX512-BF16: 1.8x the images/s of float32 on this project's machine;
    # elsewhere the run stays in float32).
    "fast-cpu": dict(image_size=112, batch_size=32, lr=2e-3, optimizer="adamw", weight_decay=0.05, schedule="onecycle",
                     warmup=0.15, keep="last", time_budget_s=170.0, auto_size=True, epochs=1000, eval_every=40, cpu_bf16=True,
                     channels_last=True, augment=AugmentConfig(rotate=0.0, scale=0.05, translate=0.03, brightness=0.0,
                                                               contrast=0.0)),
    # The recipe as taught: 224 px, batch 6, Adam 3e-5, horizontal flips only, a check every 20 steps.
    "recipe": dict(image_size=224, batch_size=6, lr=3e-5, eval_every=20, epochs=10, augment=AugmentConfig().only(["hflip"])),
    # A CUDA GPU: full resolution, batches of 256 in bfloat16 (11,200 images/s on an H200 against 8,500 at 128:
    # fewer launches per image), channels-last convolutions, a check every 10 steps (2,560 images, as 20 steps
    # of 128 before), and a decoding process per core (one core left for the training loop) that runs while the
    # first epoch trains.
    "gpu": dict(image_size=224, batch_size=256, lr=3e-4, eval_every=10, epochs=30, channels_last=True, amp=True,
                workers=DECODERS),
}

TITLES = {"fast-cpu": "Fast (CPU)", "recipe": "Recipe", "gpu": "GPU"}  # how lists and labels name each preset

# Why each preset exists, in a sentence; the numbers in its description come from PRESETS itself (`describe`).
PURPOSES = {
    "fast-cpu": "Trades fine detail for a good model while the class waits: the run stops by itself when the time is "
                "up (or the target is reached).",
    "recipe": "The settings the course uses. Slow on a CPU.",
    "gpu": "For a CUDA machine.",
}


def _augment_words(a: AugmentConfig) -> str:
    words = (["mirror images"] if a.hflip else []) + [f"{what} {value}" for what, on, value in (
        ("rotate ±", a.rotate, f"{a.rotate:g}°"), ("zoom ±", a.scale, f"{a.scale:.0%}"),
        ("shift ±", a.translate, f"{a.translate:.0%}"), ("brightness ±", a.brightness, f"{a.brightness:g}"),
        ("contrast ±", a.contrast, f"{a.contrast:.0%}")) if on]
    return ", ".join(w.replace("± ", "±") for w in words) or "no augmentation"


def describe(name: str) -> str:
    """A preset in words for the Train tab, its numbers read from PRESETS (a changed value changes the text)."""
    cfg = apply_preset(name)
    parts = [f"{cfg.image_size} px" + (" at most (smaller on a slow CPU, chosen at the start)" if cfg.auto_size else ""),
             f"batch {cfg.batch_size}",
             f"{cfg.optimizer.replace('adamw', 'AdamW').replace('adam', 'Adam')} {cfg.lr:g}"
             + (" with a one-cycle schedule" if cfg.schedule == "onecycle" else ""),
             _augment_words(cfg.augment),
             f"evaluation every {cfg.eval_every} steps"]
    if cfg.channels_last:
        parts.append("channels-last")
    if cfg.cpu_bf16:
        parts.append("bfloat16 where the processor has it")
    elif cfg.amp and name == "gpu":
        parts.append("bfloat16")
    if cfg.workers:
        parts.append(f"{cfg.workers} decoding process{'es' if cfg.workers != 1 else ''} (one per core but one)")
    if cfg.time_budget_s:
        parts.append(f"a budget of {cfg.time_budget_s:g} s")
    return f"{TITLES[name]}: {', '.join(parts)}. {PURPOSES[name]}"


def apply_preset(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (default: TrainConfig()) with the preset's settings."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(base or TrainConfig(), preset=name, **PRESETS[name])


def default_preset(cuda: bool) -> str:
    """The preset for the machine: GPU on CUDA, Fast (CPU) otherwise. The CLI and the app both start from it."""
    return "gpu" if cuda else "fast-cpu"


def presets_for(cuda: bool) -> list[str]:
    """The presets worth offering on this machine: the GPU preset needs a CUDA device."""
    return [name for name in PRESETS if cuda or name != "gpu"]


DESCRIPTIONS = {name: describe(name) for name in PRESETS}  # what the Train tab shows beside the preset choice
