"""The lungs: where they are in an image, hiding them, and how much of an explanation falls on them.

The COVID-19 Radiography Database mixes hospitals, sources and ages (every viral-pneumonia image is of a child), so
a model can score well without looking at the lungs at all: Maguolo & Nanni (2021) blacked out the centre of each
X-ray and still classified well, and DeGrave et al. (2021) found models reading hospital markers. This module owns
the facts of that lesson. `HideLungs` says what to black out: nothing, a central `box` (no files needed), or the
dataset's own lung `mask`s, which the Kaggle v4 release ships as `<Class>/masks/<same name>` beside
`<Class>/images/<name>` (256x256 white-on-black PNGs, while the images are 299x299). `mask_path` and `read_mask`
find and decode those; `hide_region` turns a setting into the boolean region to black out, which
`cxr.data.transforms.to_model_input` moves with the augmentation and zeroes, and `hide_pixels` zeroes in uint8 images
that are not augmented (validation, test). `lung_focus` measures the share of a heatmap's mass inside the lungs,
`area_share` the share a uniform heatmap would get, and `lung_outline` the boundary pixels to draw.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxr.data.images import MAX_PIXELS

# Each mode and what it does, in words the UI and the CLI can show as they are.
HIDE_MODES = {
    "none": "nothing is hidden",
    "box": "a central box over both lungs is blacked out (works with any dataset)",
    "mask": "the lung fields from the dataset's own masks are blacked out (Kaggle layout with masks/)",
}
DEFAULT_BOX = (0.15, 0.85, 0.10, 0.90)  # x from, x to, y from, y to: both lung fields of a centred frontal X-ray


def box_text(box: Sequence[float] = DEFAULT_BOX) -> str:
    """A box as the CLI takes it: "0.15,0.85,0.10,0.90"."""
    return ",".join(f"{v:.2f}" for v in box)


@dataclass(frozen=True)
class HideLungs:
    """What to black out of every image the model sees (training, validation and test alike)."""

    mode: str = "none"  # one of HIDE_MODES
    box: tuple[float, float, float, float] = DEFAULT_BOX  # for mode "box": fractions of the width and height

    def __post_init__(self) -> None:
        if isinstance(self.box, list):  # read back from JSON (a checkpoint's config)
            object.__setattr__(self, "box", tuple(self.box))

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def needs_masks(self) -> bool:
        return self.mode == "mask"

    def validate(self) -> None:
        if self.mode not in HIDE_MODES:
            raise ValueError(f"hide-lungs mode must be one of {', '.join(HIDE_MODES)}, got {self.mode!r}")
        box = self.box
        ok = (
            isinstance(box, tuple) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in box)
        )
        if not ok or not (box[0] < box[1] and box[2] < box[3]):
            raise ValueError(f"hide box must be four fractions x0 < x1, y0 < y1 between 0 and 1, got {box!r}")

    @classmethod
    def parse(cls, text: str) -> "HideLungs":
        """'none', 'box', 'mask' or 'box:x0,x1,y0,y1' (fractions) -> a validated HideLungs."""
        mode, _, rest = text.strip().lower().partition(":")
        try:
            box = tuple(float(v) for v in rest.split(",")) if rest else DEFAULT_BOX
        except ValueError:
            raise ValueError(f"hide box must be four fractions such as {box_text()}, got {rest!r}") from None
        hide = cls(mode, box)  # type: ignore[arg-type]
        hide.validate()
        return hide

    @classmethod
    def from_config(cls, config: dict) -> "HideLungs":
        """How a run hid the lungs, from its settings as a checkpoint keeps them (`asdict(TrainConfig)`)."""
        return cls(config.get("hide_lungs", "none"), tuple(config.get("hide_box", DEFAULT_BOX)))


def box_region(
    box: Sequence[float], size: "int | tuple[int, int]", device: "str | torch.device" = "cpu"
) -> torch.Tensor:
    """bool [H, W]: True inside the box (x0, x1, y0, y1 as fractions of the width and height)."""
    h, w = (size, size) if isinstance(size, int) else size
    x0, x1, y0, y1 = box
    region = torch.zeros(h, w, dtype=torch.bool, device=device)
    region[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = True
    return region


def hide_region(
    hide: HideLungs,
    masks: torch.Tensor | None,
    size: "int | tuple[int, int]",
    device: "str | torch.device | None" = None,
) -> torch.Tensor:
    """The pixels `hide` blacks out, as bool [B, 1, H, W] (mask mode: one per mask) or [1, 1, H, W] (box, none).

    `masks` (uint8 [B, 1, H, W], nonzero = lung) is needed for mode "mask" and ignored otherwise. The UI can draw
    this region's outline (`lung_outline`) over an image."""
    hide.validate()
    h, w = (size, size) if isinstance(size, int) else size
    if hide.mode == "mask":
        if masks is None:
            raise ValueError("hide-lungs mode 'mask' needs the lung masks of the batch (ImageCache(..., masks=True))")
        if masks.dim() != 4 or masks.shape[1] != 1 or tuple(masks.shape[-2:]) != (h, w):
            raise ValueError(f"lung masks must have shape [B, 1, {h}, {w}], got {tuple(masks.shape)}")
        return masks > 0 if device is None else (masks > 0).to(device)
    device = device if device is not None else (masks.device if masks is not None else "cpu")
    if hide.mode == "box":
        return box_region(hide.box, (h, w), device)[None, None]
    return torch.zeros(1, 1, h, w, dtype=torch.bool, device=device)


def hide_pixels(images: torch.Tensor, hide: HideLungs | None, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Un-augmented uint8 images [B, 1, H, W] with the hidden region set to 0 (a new tensor; the input is kept).

    For validation and test batches; training batches are hidden by `to_model_input`, after augmentation."""
    if hide is None or not hide.enabled:
        return images
    region = hide_region(hide, masks, tuple(images.shape[-2:]), images.device)
    return images.masked_fill(region, 0)


def expected_mask_path(image_path: "str | Path") -> Path | None:
    """Where the Kaggle v4 layout keeps this image's lung mask (`../masks/<same name>`), or None when the image
    does not lie in an `images` folder (other layouts have no masks)."""
    p = Path(image_path)
    if p.parent.name.lower() != "images":
        return None
    return p.parent.parent / "masks" / p.name


def mask_path(image_path: "str | Path") -> Path | None:
    """This image's lung mask file if it exists, else None."""
    p = expected_mask_path(image_path)
    return p if p is not None and p.is_file() else None


def count_masks(files: Sequence["str | Path"]) -> int:
    """How many of `files` have a lung mask beside them."""
    return sum(mask_path(f) is not None for f in files)


def has_masks(files: Sequence["str | Path"]) -> bool:
    """True when every one of `files` has a lung mask (so mode "mask" can train on them)."""
    return bool(files) and all(mask_path(f) is not None for f in files)


def require_masks(files: Sequence["str | Path"]) -> None:
    """Refuse, with one sentence naming the first missing file, unless every image has a lung mask."""
    missing = [f for f in files if mask_path(f) is None]
    if missing:
        where = expected_mask_path(missing[0])
        looked = f" (looked for {where})" if where is not None else " (it is not in an images/ folder)"
        raise ValueError(
            f"hide-lungs mode 'mask' needs a lung mask for every image, but {len(missing)} of {len(files)} have none, "
            f"first {Path(missing[0]).name}{looked}; use mode 'box', which needs no masks"
        )


def read_mask(path: "str | Path", size: int) -> torch.Tensor:
    """A lung mask file -> uint8 tensor [1, S, S] of 0 (background) and 1 (lung), resized to the training size.

    Masks are 256x256 while their images are 299x299; both are squashed to S x S the same way, so they line up.
    Resized smoothly and thresholded at half, which keeps the edge where it was. Read with Pillow directly, not
    `read_xray`: an all-black mask (no lung found) is a valid mask, not an empty X-ray."""
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as src:
                if src.width * src.height > MAX_PIXELS:
                    raise ValueError(f"lung mask {name} declares too many pixels ({src.width}x{src.height})")
                img = src.convert("L")
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"lung mask {name} cannot be read ({e})") from e
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy((np.asarray(img) >= 128).astype(np.uint8)).unsqueeze(0)


def _as_2d(a: "np.ndarray | torch.Tensor", name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    arr = arr.squeeze() if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [H, W], got shape {arr.shape}")
    return arr


def area_share(mask: "np.ndarray | torch.Tensor") -> float:
    """The share of the image inside the mask: the lung focus a uniform heatmap would score (the baseline)."""
    return float((_as_2d(mask, "mask") > 0).mean())


def lung_focus(heatmap: "np.ndarray | torch.Tensor", mask: "np.ndarray | torch.Tensor") -> float:
    """The share of the heatmap's mass that lies inside the lung mask, in [0, 1]; compare it with `area_share`.

    The heatmap (float >= 0) is resized to the mask's size if they differ. NaN when the heatmap is all zero: the
    method found no evidence anywhere, so there is no share to speak of."""
    heat = _as_2d(heatmap, "heatmap").astype(np.float32)
    inside = _as_2d(mask, "mask") > 0
    if not np.isfinite(heat).all() or heat.min() < 0:
        raise ValueError("heatmap must hold finite values >= 0 (a Grad-CAM, Integrated Gradients or occlusion map)")
    if heat.shape != inside.shape:
        t = F.interpolate(torch.from_numpy(heat)[None, None], size=inside.shape, mode="bilinear", align_corners=False)
        heat = t[0, 0].clamp_min(0).numpy()
    total = float(heat.sum(dtype=np.float64))
    if total == 0:
        return math.nan
    return float(heat[inside].sum(dtype=np.float64)) / total


def lung_outline(mask: "np.ndarray | torch.Tensor", width: int = 1) -> np.ndarray:
    """bool [H, W]: the mask's pixels within `width` pixels of its edge (the image border counts as outside)."""
    inside = _as_2d(mask, "mask") > 0
    if width < 1:
        raise ValueError(f"outline width must be at least 1 pixel, got {width}")
    core = inside
    for _ in range(width):  # erode by one pixel (4-neighbourhood) per round
        p = np.pad(core, 1, constant_values=False)
        core = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return inside & ~core
