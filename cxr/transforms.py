"""Every image transform of the recipe, in one place: resize, augmentation, normalisation and its inverse.

The pipeline is split where the cost is. `prepare_image` (decode-side, once per file) turns a grayscale image into
a small uint8 tensor at the training resolution; that tensor is what the data cache keeps. `to_model_input`
(batch-side, every step) turns a uint8 batch into the normalised 3-channel float tensor ResNet18 expects,
optionally augmenting it first. Augmentation runs on whole batches with a different random draw per image, on
whatever device the batch is on, so the same code serves CPU training, GPU training, the augmentation browser and
(with augmentation off) inference. Nothing else in the project declares a normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ImageNet statistics: the pretrained ResNet18 saw its inputs normalised this way, so ours must be too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        """This config with every augmentation not in `names` switched off (the UI's checkboxes)."""
        unknown = set(names) - set(self.names())
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; choose from {', '.join(self.names())}")
        off = AugmentConfig.none()
        return replace(self, **{n: getattr(off, n) for n in self.names() if n not in names})


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
    n = batch.shape[0]
    out = batch
    if cfg.rotate or cfg.scale or cfg.translate:
        theta = _affine_matrices(n, cfg, gen).to(batch.device, batch.dtype)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    elif cfg.hflip:
        flip = (torch.rand(n, generator=gen) < 0.5).to(batch.device).view(n, 1, 1, 1)
        out = torch.where(flip, batch.flip(-1), batch)
    if cfg.contrast or cfg.brightness:
        c = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.contrast
        b = (torch.rand(n, generator=gen) * 2 - 1) * cfg.brightness
        c, b = c.to(batch.device, batch.dtype).view(n, 1, 1, 1), b.to(batch.device, batch.dtype).view(n, 1, 1, 1)
        mean = out.mean(dim=(2, 3), keepdim=True)
        out = ((out - mean) * c + mean + b).clamp(0, 1)
    return out if out is not batch else batch.clone()


def _stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(1, 3, 1, 1)
    return mean, std


def to_model_input(
    batch: torch.Tensor, augment_cfg: AugmentConfig | None = None, gen: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 [B, 1, H, W] -> normalised float [B, 3, H, W], augmented first when `augment_cfg` is given.

    The single gray channel is repeated three times so that ImageNet-pretrained filters apply unchanged.
    """
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] != 1:
        raise ValueError(f"expected a uint8 batch of shape [B, 1, H, W], got {batch.dtype} {tuple(batch.shape)}")
    x = batch.float().div_(255)
    if augment_cfg is not None and augment_cfg.enabled():
        x = augment(x, augment_cfg, gen if gen is not None else torch.Generator().manual_seed(0))
    mean, std = _stats(x.device, x.dtype)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: [B, 3, H, W] or [3, H, W] model input -> float in [0, 1], ready to show."""
    squeeze = x.dim() == 3
    x4 = x.unsqueeze(0) if squeeze else x
    mean, std = _stats(x4.device, x4.dtype)
    out = (x4 * std + mean).clamp(0, 1)
    return out.squeeze(0) if squeeze else out


def to_display(x: torch.Tensor) -> np.ndarray:
    """One normalised model input [3, H, W] -> uint8 RGB array [H, W, 3] for a screen."""
    return (denormalize(x.detach().float().cpu()) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
