"""What a model trained with hidden lungs never saw, drawn on every map that explains it.

A run with `hide_lungs` set ("box" or "mask", see `cxr.data.lungs`) trained on X-rays whose lungs were black. Its
Grad-CAM, scaled up from a grid of a few cells, can still paint red squarely on them, and a student reads that as
"it looked at the lungs". So every map of such a model (the Train tab's attention strip, Evaluate's top losses,
Classify, the report's figures) is drawn over the picture as the model saw it, the hidden region black with its edge
in magenta, under one sentence. `hidden_region` is the one place that turns a model's settings (and, for mode
"mask", the image's own lung mask) into that region; `draw_map` draws a heatmap with it; `Hidden.sentence` says
what the picture shows, or, for a mask-trained model and an image without a mask, that nothing could be outlined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from cxr.data.lungs import HideLungs, box_region
from cxr.explain.maps import overlay

SENTENCE = "This model never saw the region inside the magenta line: it was black in every image it trained on."
NO_MASK_SENTENCE = ("This model never saw the lungs (the dataset's lung masks blacked them out in every image it "
                    "trained on), but this image has no lung mask: nothing is outlined, and here the model sees lungs "
                    "it never saw in training.")


@dataclass(frozen=True)
class Hidden:
    """What one model never saw, for one picture."""

    mode: str  # the run's hide_lungs: "none", "box" or "mask"
    region: np.ndarray | None  # bool [H, W] at the picture's size; None when nothing is hidden or there is no mask

    @property
    def sentence(self) -> str:
        """The one sentence under the picture ("" when the model saw everything)."""
        if self.mode == "none":
            return ""
        return SENTENCE if self.region is not None else NO_MASK_SENTENCE


def _size(size: "int | tuple[int, ...]") -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)[:2]
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"picture size must be positive, got {size!r}")
    return int(h), int(w)


def hidden_region(config: Mapping[str, Any], size: "int | tuple[int, ...]",
                  mask: "np.ndarray | torch.Tensor | None" = None) -> Hidden:
    """What the model whose settings are `config` (a checkpoint's `config`, or a run's) never saw, for a picture of
    `size` (its side, or its shape (height, width, ...)). For mode "mask", `mask` is that image's lung mask (any
    size, nonzero = lung; None when it has none); other modes ignore it. The box is a fraction of the picture, so
    it lands where training put it whatever the picture's size."""
    hide = HideLungs.from_config(dict(config))
    hide.validate()
    h, w = _size(size)
    if hide.mode == "box":
        return Hidden("box", box_region(hide.box, (h, w)).numpy())
    if hide.mode == "mask" and mask is not None:
        arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        arr = arr.squeeze() if arr.ndim > 2 else arr
        if arr.ndim != 2:
            raise ValueError(f"a lung mask must be a 2-D array [H, W], got shape {arr.shape}")
        if arr.shape != (h, w):
            arr = np.asarray(Image.fromarray((arr > 0).astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST))
        return Hidden("mask", arr > 0)
    return Hidden(hide.mode, None)


def as_seen(image: np.ndarray, hidden: Hidden | None) -> np.ndarray:
    """A copy of `image` (uint8 gray [H, W] or RGB [H, W, 3]) with the hidden region black, as the model saw it."""
    out = np.array(image, copy=True)
    if hidden is None or hidden.region is None:
        return out
    if hidden.region.shape != out.shape[:2]:
        raise ValueError(f"hidden region {hidden.region.shape} does not match the picture {out.shape[:2]}")
    out[hidden.region] = 0
    return out


def draw_map(image: "np.ndarray | Image.Image", heatmap: np.ndarray, alpha: float, hidden: Hidden | None) -> np.ndarray:
    """`overlay(image, heatmap, alpha)`, for a model that hid the lungs over the picture as it saw it: the hidden
    region black (the map's colour on it is what Grad-CAM spread there) and its edge in magenta."""
    if hidden is None or hidden.region is None:
        return overlay(image, heatmap, alpha)
    pixels = np.asarray(image.convert("L") if isinstance(image, Image.Image) else image)
    return overlay(as_seen(pixels, hidden), heatmap, alpha, outline=hidden.region)
