"""Grad-CAM with Captum: which regions of the X-ray pushed the model towards a class, and a picture of it.

Grad-CAM takes the feature maps of the last convolutional block (7x7 at 224 input, each cell seeing a large patch
of the image), weights each map by how much the class score rises when that map rises (the spatially averaged
gradient), sums, and keeps the positive part. It shows where the evidence the model used lies; it does not show
that the evidence is medically meaningful, and at 7x7 it is coarse.

Computing and drawing are separate: `gradcam` returns float heatmaps in [0, 1] at input size; `overlay` blends one
onto an image as RGB uint8. The network is run once: the trunk up to the last block without gradients, and only
the last block and the head with them, so an explanation costs little more than a prediction. The Captum hook is
placed on a per-call module, so concurrent calls on one shared model cannot see each other's hooks, and no hook
outlives the call.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib import colormaps
from PIL import Image
from torch import nn


class _Head(nn.Module):
    """The last block of layer4, then pooling and the classifier; `tap` marks the block's output for Captum."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.block, self.tap, self.fc = model.layer4[-1], nn.Identity(), model.fc
        self.pool = model.avgpool

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.tap(self.block(features))), 1))


def _trunk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ResNet18 up to (not including) the last block of layer4."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer3(model.layer2(model.layer1(x)))
    for block in model.layer4[:-1]:
        x = block(x)
    return x


def gradcam(
    model: nn.Module, x: torch.Tensor, target: "int | list[int] | None" = None
) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM heatmaps [B, H, W] in [0, 1] at the input's size, and the logits [B, classes].

    `x` is a normalised model input [B, 3, H, W]; `target` is a class index (or one per image), by default the
    predicted class. The model is put in eval mode (batch norm must not update from the image being explained).
    """
    if x.dim() != 4:
        raise ValueError(f"expected a batch [B, 3, H, W], got shape {tuple(x.shape)}")
    model.eval()
    with torch.no_grad():
        features = _trunk(model, x)  # most of the network, run once and without a graph
    head = _Head(model)
    with torch.no_grad():
        logits = head(features)
    k = logits.shape[1]
    if target is None:
        targets = logits.argmax(1).tolist()
    else:
        targets = [int(target)] * len(x) if np.ndim(target) == 0 else [int(t) for t in target]
    if len(targets) != len(x) or any(not 0 <= t < k for t in targets):
        raise ValueError(f"target must be a class index in 0..{k - 1} (one per image), got {target!r}")
    features.requires_grad_(True)  # so the head builds a graph even if the weights are frozen
    # Captum: gradient of the target score w.r.t. the block's feature maps, averaged per map, times the maps.
    cam = LayerGradCam(head, head.tap).attribute(features, target=targets, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    cam = cam[:, 0].detach().float()
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    cam = (cam / peak).clamp(0, 1)  # all-zero maps (no positive evidence) stay zero
    return cam.cpu().numpy(), logits.detach()


def overlay(image: "np.ndarray | Image.Image", heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend `heatmap` ([h, w] in [0, 1]) over `image` (gray or RGB, any size) -> uint8 RGB at the image's size.

    The heatmap is resized to the image, so it may be drawn over the original, un-squashed picture.
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
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
