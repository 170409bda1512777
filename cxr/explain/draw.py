"""Drawing a heatmap: `overlay` blends a map in [0, 1] onto an X-ray as uint8 RGB, `draw_outline` traces a region
(e.g. the lungs) on top. Computing maps lives in `cxr.explain.maps`; nothing here knows which method made one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from cxr.data.lungs import lung_outline


def draw_outline(
    rgb: np.ndarray, region: "np.ndarray | torch.Tensor", color: tuple[int, int, int] = (255, 0, 255)
) -> np.ndarray:
    """A copy of `rgb` (uint8 [H, W, 3]) with the edge of `region` (bool or 0/1 [h, w], any size) drawn in `color`.

    The region is scaled to the image first, so the line is crisp on a large original; it is about 1 pixel wide per
    300 pixels of image side. Magenta by default: no colour map here uses it, and no X-ray."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be uint8 RGB [H, W, 3], got {rgb.dtype} {rgb.shape}")
    arr = region.detach().cpu().numpy() if isinstance(region, torch.Tensor) else np.asarray(region)
    arr = arr.squeeze() if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise ValueError(f"outline region must be a 2-D mask [H, W], got shape {arr.shape}")
    h, w = rgb.shape[:2]
    mask = Image.fromarray(((arr > 0) * 255).astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST)
    edge = lung_outline(np.asarray(mask), width=max(1, round(max(h, w) / 300)))
    out = rgb.copy()
    out[edge] = color
    return out


OVERLAY_COLORMAP = "jet"  # the overlays' colour scale (the app's colour bar samples the same one)


def overlay(
    image: "np.ndarray | Image.Image",
    heatmap: np.ndarray,
    alpha: float = 0.45,
    colormap: str = OVERLAY_COLORMAP,
    outline: "np.ndarray | torch.Tensor | None" = None,
) -> np.ndarray:
    """Blend `heatmap` ([h, w] in [0, 1]) over `image` (gray or RGB, any size) -> uint8 RGB at the image's size.

    The heatmap is resized to the image, so it may be drawn over the original, un-squashed picture. `outline`, a
    region such as a lung mask (any size), has its edge drawn on top (see `draw_outline`).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if colormap not in colormaps:
        raise ValueError(f"unknown colormap {colormap!r}; try jet, inferno, viridis or turbo")
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be uint8 gray or RGB, got {rgb.dtype} {rgb.shape}")
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))[None, None]
    heat = F.interpolate(heat, size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
    colored = colormaps[colormap](heat)[..., :3]  # float RGB in [0, 1]
    # Stronger evidence shows more colour; where the map is zero the X-ray shows through untouched.
    weight = alpha * heat[..., None]
    out = rgb.astype(np.float32) * (1 - weight) + colored * 255 * weight
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return out if outline is None else draw_outline(out, outline)
