"""How fine a map can be: the cells per side of each ResNet18 stage at an input size, and the stage the default map
(Grad-CAM, `cxr.explain.maps`) is taken at, so every caption says the grid it really has.

A map is no finer than the feature maps it weighs: the stem halves the image twice and each stage after layer1 once
more, so at the Fast preset's 112 px layer4 is 4 x 4 cells (a quarter of the image each: it cannot tell a lung from
the heart) and layer2 is 14 x 14. `benchmarks/map_grid.py` measured which stage finds what the model used.
"""

from __future__ import annotations

import math

STAGES = ("layer1", "layer2", "layer3", "layer4")  # ResNet18's stages; each halves the grid of the one before
MIN_GRID = 7  # the default map's cells per side, at least: a cell a seventh of the image, narrower than a lung
FINE_GRID = 14  # aimed for: on 14 x 14 cells Grad-CAM found the drawn signs better than on 7 (benchmarks/map_grid.py)


def stage_grid(image_size: int, stage: str) -> int:
    """Cells per side of `stage`'s feature maps for a square input of `image_size` px: the stem halves the image
    twice, each stage after layer1 once more, each halving rounding up (112 px: layer3 7, layer4 4)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; ResNet18 has {', '.join(STAGES)}")
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image size must be a whole number of pixels, at least 1, got {image_size!r}")
    return math.ceil(int(image_size) / 2 ** (STAGES.index(stage) + 2))


def map_stage(image_size: int) -> str:
    """The stage the default map (Grad-CAM) is taken at: the deepest with `FINE_GRID` cells per side, down to layer2
    (layer3 from 209 px, layer2 from 56; layer1, which sees edges rather than the class, only under 56 px)."""
    fine = [s for s in STAGES[1:] if stage_grid(image_size, s) >= FINE_GRID]
    return fine[-1] if fine else "layer2" if stage_grid(image_size, "layer2") >= MIN_GRID else "layer1"


def map_grid(image_size: int) -> int:
    """Cells per side of the default map at `image_size` px: what a caption should say it is drawn from."""
    return stage_grid(image_size, map_stage(image_size))
