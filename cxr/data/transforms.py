"""Every image transform of the recipe, in one place: resize, augmentation, normalisation and its inverse.

The pipeline is split where the cost is. `prepare_image` (decode-side, once per file) turns a grayscale image into
a small uint8 tensor at the training resolution; that tensor is what the data cache keeps. `to_model_input`
(batch-side, every step) turns a uint8 batch into the normalised 3-channel float tensor ResNet18 expects,
optionally augmenting it first. Augmentation runs on whole batches with a different random draw per image, on
whatever device the batch is on, so the same code serves CPU training, GPU training, the augmentation browser and
(with augmentation off) inference. Nothing else in the project declares a normalisation. When the lungs are hidden
(`cxr.data.lungs.HideLungs`), the hidden region moves with the image under the same geometric draw and is blacked out
after augmentation, so the model never sees a hidden pixel; hiding draws no extra random numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxr.data.lungs import HideLungs, hide_region

# ImageNet statistics: the pretrained ResNet18 saw its inputs normalised this way, so ours must be too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SNAP = 1e-6  # far below one grey level (1/255): only float rounding is this close to black or white


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes applied to training images so the model learns the disease, not one exact picture.

    Each field switches one augmentation: False or 0 turns it off.
    """

    hflip: bool = True  # the recipe's augmentation; note it mirrors anatomy (the heart moves to the right)
    rotate: float = 10.0  # degrees either way: patients never stand perfectly square to the detector
    scale: float = 0.10  # zoom in or out by up to 10%: body size and detector distance vary
    translate: float = 0.05  # shift by up to 5% of the side: positioning differs from scan to scan
    brightness: float = 0.10  # add up to +-0.1 to the [0, 1] pixel values: exposure varies
    contrast: float = 0.20  # stretch contrast by up to +-20%: machines process images differently

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(hflip=False, rotate=0.0, scale=0.0, translate=0.0, brightness=0.0, contrast=0.0)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def enabled(self) -> tuple[str, ...]:
        return tuple(name for name in self.names() if getattr(self, name))

    def only(self, names: "list[str] | tuple[str, ...]") -> "AugmentConfig":
        """Exactly the augmentations in `names` on (the UI's checkboxes): those this config has on keep their
        strength (a preset's gentle zoom stays gentle), those it has off come on at the default strength, and every
        other one is switched off."""
        unknown = set(names) - set(self.names())
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; choose from {', '.join(self.names())}")
        off, default = AugmentConfig.none(), AugmentConfig()
        return replace(self, **{n: (getattr(self, n) or getattr(default, n)) if n in names else getattr(off, n)
                                for n in self.names()})


def prepare_image(img: Image.Image, image_size: int) -> torch.Tensor:
    """A grayscale PIL image -> uint8 tensor [1, S, S]. Squashes to a square, as the database itself was resized."""
    if img.mode != "L":
        img = img.convert("L")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)  # antialiased when shrinking
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).unsqueeze(0)


def _affine_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """One random 2x3 affine matrix per image (rotation, zoom, shift, mirror), as `affine_grid` wants them."""

    def uniform(spread: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * spread

    angle = uniform(math.radians(cfg.rotate))
    zoom = 1 + uniform(cfg.scale)
    shift_x, shift_y = uniform(2 * cfg.translate), uniform(2 * cfg.translate)  # grid units span [-1, 1]
    mirror = torch.ones(n)
    if cfg.hflip:
        mirror = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, shift_x], 1), torch.stack([sin * mirror, cos, shift_y], 1)], 1
    )
    return theta


def augment(batch: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch [B, 1, H, W] in [0, 1]; every image gets its own random draw. Returns a new tensor.

    `gen` is a CPU generator: the random numbers are drawn on the CPU (cheap, reproducible on any device) and the
    pixel work happens wherever `batch` lives.
    """
    return _augment(batch, cfg, gen, None)[0]


def _augment(
    batch: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, hidden: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`augment`, optionally moving a region `hidden` (bool [B or 1, 1, H, W]) with each image and blacking it out.

    The region rides along as a second channel through the very same resampling, so it stays aligned with the
    anatomy; it is zeroed before the brightness and contrast change (so their image mean holds nothing of it) and
    again after (brightness would lift it off zero). The random draws are the same as without a region."""
    n = batch.shape[0]
    out, region = batch, hidden
    if region is not None:
        region = region.expand(n, -1, -1, -1)
    if cfg.rotate or cfg.scale or cfg.translate:
        theta = _affine_matrices(n, cfg, gen).to(batch.device, batch.dtype)
        stacked = batch if region is None else torch.cat([batch, region.to(batch.dtype)], 1)
        grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
        moved = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = moved[:, :1] if region is not None else moved
        if region is not None:
            region = moved[:, 1:] > 0  # any pixel a hidden one contributed to is hidden: nothing of it leaks out
    elif cfg.hflip:
        flip = (torch.rand(n, generator=gen) < 0.5).to(batch.device).view(n, 1, 1, 1)
        out = torch.where(flip, batch.flip(-1), batch)
        if region is not None:
            region = torch.where(flip, region.flip(-1), region)
    if region is not None:
        out = out.masked_fill(region, 0)
    if cfg.contrast or cfg.brightness:
        c = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.contrast
        b = (torch.rand(n, generator=gen) * 2 - 1) * cfg.brightness
        c, b = c.to(batch.device, batch.dtype).view(n, 1, 1, 1), b.to(batch.device, batch.dtype).view(n, 1, 1, 1)
        mean = out.mean(dim=(2, 3), keepdim=True)
        out = ((out - mean) * c + mean + b).clamp(0, 1)
        if region is not None:
            out = out.masked_fill(region, 0)
    return (out if out is not batch else batch.clone()), region


def _stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(1, 3, 1, 1)
    return mean, std


def to_model_input(
    batch: torch.Tensor,
    augment_cfg: AugmentConfig | None = None,
    gen: torch.Generator | None = None,
    hide: HideLungs | None = None,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 [B, 1, H, W] -> normalised float [B, 3, H, W], augmented first when `augment_cfg` is given.

    The single gray channel is repeated three times so that ImageNet-pretrained filters apply unchanged. With
    `hide`, its region (`masks`: uint8 [B, 1, H, W] lung masks, for mode "mask") is black (0 before normalising).
    """
    return to_model_input_and_region(batch, augment_cfg, gen, hide, masks)[0]


def to_model_input_and_region(
    batch: torch.Tensor,
    augment_cfg: AugmentConfig | None = None,
    gen: torch.Generator | None = None,
    hide: HideLungs | None = None,
    masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`to_model_input`, and where the hidden region ended up after augmentation (bool [B, 1, H, W]), or None
    when nothing is hidden: the augmentation browser draws its outline."""
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] != 1:
        raise ValueError(f"expected a uint8 batch of shape [B, 1, H, W], got {batch.dtype} {tuple(batch.shape)}")
    region = None
    if hide is not None and hide.enabled:
        region = hide_region(hide, masks, tuple(batch.shape[-2:]), batch.device)
        if region.shape[0] not in (1, batch.shape[0]):
            raise ValueError(f"got {region.shape[0]} lung masks for a batch of {batch.shape[0]} images")
        region = region.expand(batch.shape[0], -1, -1, -1)
    x = batch.float().div_(255)
    if augment_cfg is not None and augment_cfg.enabled():
        x, region = _augment(x, augment_cfg, gen if gen is not None else torch.Generator().manual_seed(0), region)
    elif region is not None:
        x = x.masked_fill_(region, 0)
    mean, std = _stats(x.device, x.dtype)
    return (x.expand(-1, 3, -1, -1) - mean) / std, region


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: [B, 3, H, W] or [3, H, W] model input -> float in [0, 1], ready to show.

    Black and white come back exactly: float rounding leaves up to ~1e-7 where the ends should be, and a hidden
    (blacked-out) pixel should read as 0, not as almost 0."""
    squeeze = x.dim() == 3
    x4 = x.unsqueeze(0) if squeeze else x
    mean, std = _stats(x4.device, x4.dtype)
    out = (x4 * std + mean).clamp(0, 1)
    out = out.masked_fill(out < _SNAP, 0).masked_fill(out > 1 - _SNAP, 1)
    return out.squeeze(0) if squeeze else out


def to_display(x: torch.Tensor) -> np.ndarray:
    """One normalised model input [3, H, W] -> uint8 RGB array [H, W, 3] for a screen."""
    return (denormalize(x.detach().float().cpu()) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
