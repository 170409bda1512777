"""Named training settings: what each trades, so a teacher can pick one without reading the code.

A preset is a set of TrainConfig overrides. The benchmark (`python -m cxr bench`) measures them side by side
against the plain recipe; the numbers in the descriptions come from it (see README, Speed).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .config import TrainConfig
from .errors import UserError
from .transforms import AugmentConfig

PRESETS: dict[str, dict[str, Any]] = {
    # Two CPU cores: a third of the pixels (128 px), batches of 16 (the cores stay busy, yet a few hundred images
    # already give dozens of updates), Adam at 3e-4 (ten times the recipe: fewer, larger steps), all augmentations,
    # and the recipe's check every 20 steps, which at 128 px costs under a tenth of the time.
    "fast-cpu": dict(image_size=128, batch_size=16, lr=3e-4, eval_every=20, epochs=30),
    # The recipe as taught: 224 px, batch 6, Adam 3e-5, horizontal flips only, a check every 20 steps.
    "recipe": dict(image_size=224, batch_size=6, lr=3e-5, eval_every=20, epochs=10, augment=AugmentConfig().only(["hflip"])),
    # A CUDA GPU: full resolution, large batches in bfloat16, channels-last convolutions, decoding in workers.
    "gpu": dict(image_size=224, batch_size=128, lr=3e-4, eval_every=20, epochs=30, channels_last=True, amp=True, workers=8),
}

TITLES = {"fast-cpu": "Fast (CPU)", "recipe": "Recipe", "gpu": "GPU"}  # how lists and labels name each preset

DESCRIPTIONS = {
    "fast-cpu": "Fast (CPU): 128 px, batch 16, Adam 3e-4, all augmentations. Trades fine detail (a third of the "
    "pixels) for about three times the speed of the recipe on two cores.",
    "recipe": "Recipe: 224 px, batch 6, Adam 3e-5, horizontal flip only, evaluation every 20 steps: the settings "
    "the course uses. Slow on a CPU.",
    "gpu": "GPU: 224 px, batch 128, Adam 3e-4, bfloat16, channels-last, 8 decoding workers. For a CUDA machine.",
}


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
