"""Explanations with Captum: which regions of the X-ray pushed the model towards a class, three ways, and a picture.

Three methods answer the question differently, and showing them side by side is the lesson: where they disagree,
no single map is "the" reason.
- Grad-CAM takes the feature maps of the last convolutional block (7x7 at 224 input, each cell seeing a large
  patch), weights each by how much the class score rises when it rises (the averaged gradient), sums, and keeps the
  positive part. Cheap (about one forward pass) and coarse.
- Integrated Gradients adds up the input gradients along a straight path from a black image to the X-ray: pixel
  level, noisy, and it credits every pixel that differs from black.
- Occlusion blacks out one square patch at a time and records how much the class score drops: slow (one forward
  pass per patch position), but it asks the model directly, with no gradients.
The methods differ in one function each, registered in `METHODS`; `explain` does what they share (eval mode and
its restoration, the target class, scaling to [0, 1] per image), so drawing and the app never need to know which
one ran. Computing and drawing are separate: `explain` returns float heatmaps [B, H, W] in [0, 1] at input size;
`overlay` blends one onto an image as RGB uint8, optionally with an outline (e.g. the lungs). The sanity check of
Adebayo et al. (randomised weights) lives in `cxr.explain.sanity`. No hook outlives a call, and none is placed on
the shared model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion
from matplotlib import colormaps
from PIL import Image
from torch import nn

from cxr.data.lungs import lung_outline
from cxr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

# One class for every image, one per image (None in the list: that image's predicted class), or None: each image's
# predicted class.
Target = Union[int, list[Union[int, None]], None]
IG_STEPS = 16  # points on the path from black to the image: 16 keeps a 224 px map near 2 s on two cores
OCCLUSION_STRIDE = 8  # patch positions per side (stride = side / 8); each patch is two strides wide (side / 4)


class _Head(nn.Module):
    """The last block of layer4, then pooling and the classifier; `tap` marks the block's output for Captum."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.block, self.tap, self.fc = model.layer4[-1], nn.Identity(), model.fc
        self.pool = model.avgpool

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits, and the pooled 512 features they are computed from (what `cxr.explain.ood` measures)."""
        pooled = torch.flatten(self.pool(self.tap(self.block(features))), 1)
        return self.fc(pooled), pooled


def _trunk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ResNet18 up to (not including) the last block of layer4."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer3(model.layer2(model.layer1(x)))
    for block in model.layer4[:-1]:
        x = block(x)
    return x


def pooled_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass without gradients: the pooled features [B, 512] that `fc` reads, and the logits it makes of them."""
    with torch.no_grad():
        logits, pooled = _Head(model)(_trunk(model, x))
    return pooled, logits


def _targets(logits: torch.Tensor, target: Target) -> list[int]:
    """One class index per image: `target` (one, or one per image), by default the predicted class."""
    top = logits.argmax(1).tolist()
    return top if target is None else [t if p < 0 else p for p, t in zip(_given_targets(*logits.shape, target), top)]


def _given_targets(n: int, k: int, target: Target) -> list[int]:
    """`target` (one class index, or one per image, where None stands for the predicted class and is kept as -1) as
    one index per image of `n`, checked against `k` classes."""
    if np.ndim(target) == 0:
        targets = [int(target)] * n  # type: ignore[arg-type]
    else:
        targets = [-1 if t is None else int(t) for t in target]  # type: ignore[union-attr]
    if len(targets) != n or any(not -1 <= t < k for t in targets) or (np.ndim(target) == 0 and targets[0] < 0):
        raise ValueError(f"target must be a class index in 0..{k - 1} (one per image), got {target!r}")
    return targets


def _black(x: torch.Tensor) -> torch.Tensor:
    """A black image in model-input units (normalised 0), shaped like `x`: the baseline both IG and occlusion use,
    and what hiding the lungs writes, so hidden pixels get no credit."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (-mean / std).expand_as(x).contiguous()


def _gradcam_raw(model: nn.Module, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        features = _trunk(model, x)  # most of the network, run once, recording no gradients
    head = _Head(model)  # a per-call module: the Captum hook goes on its `tap`, never on the shared model
    picks = None if target is None else _given_targets(features.shape[0], model.fc.out_features, target)
    seen: dict[str, torch.Tensor] = {}

    def scores(f: torch.Tensor) -> torch.Tensor:
        logits, seen["pooled"] = head(f)
        seen["logits"] = logits
        # One score per image. With no target, each image's own top score: one pass gives the prediction and its
        # map. With none or one class for all, no index is copied from the host, so a CUDA graph can hold the call.
        if picks is None:
            return logits.amax(1)
        if np.ndim(target) == 0:
            return logits[:, picks[0]]
        index = torch.tensor(picks, device=logits.device)
        index = torch.where(index < 0, logits.argmax(1), index)  # None in the list: that image's own top class
        return logits.gather(1, index.view(-1, 1))[:, 0]

    features.requires_grad_(True)  # so the head records gradients even if the weights are frozen
    # Captum: gradient of the target score w.r.t. the block's feature maps, averaged per map, times the maps.
    cam = LayerGradCam(scores, head.tap).attribute(features, relu_attributions=True)
    logits = seen["logits"].detach()
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return cam[:, 0], logits, seen["pooled"].detach()


def _integrated_gradients_raw(model: nn.Module, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, ...]:
    pooled, logits = pooled_and_logits(model, x)
    targets = _targets(logits, target)
    # The path integral of the input gradient from black to the image, times (image - black), per pixel.
    attr = IntegratedGradients(model).attribute(
        x, baselines=_black(x), target=targets, n_steps=IG_STEPS, internal_batch_size=IG_STEPS
    )
    # How much each pixel mattered, either way, over the three (equal) channels.
    return attr.abs().sum(1), logits, pooled


def _occlusion_raw(model: nn.Module, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, ...]:
    pooled, logits = pooled_and_logits(model, x)
    targets = _targets(logits, target)
    h, w = x.shape[-2:]
    sh, sw = math.ceil(h / OCCLUSION_STRIDE), math.ceil(w / OCCLUSION_STRIDE)
    positions = math.ceil((h - 2 * sh) / sh + 1) * math.ceil((w - 2 * sw) / sw + 1)
    per_eval = math.ceil(positions / math.ceil(positions / 24))  # batches of at most 24 patched copies, evenly
    # Black out a patch (all three channels), see how far the target score falls; average over covering patches.
    attr = Occlusion(model).attribute(
        x, sliding_window_shapes=(3, 2 * sh, 2 * sw), strides=(3, sh, sw), baselines=_black(x), target=targets,
        perturbations_per_eval=per_eval,
    )
    return attr[:, 0].clamp_min(0), logits, pooled  # where blacking out lowers the score: evidence for the class


@dataclass(frozen=True)
class Method:
    """One explanation method: its raw map (float >= 0 [B, H, W] at input size), the logits and the pooled features
    they came from, and how to show it."""

    label: str  # shown in the UI
    raw: Callable[[nn.Module, torch.Tensor, Target], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    scale_quantile: float  # maps are divided by this quantile per image (1.0: the maximum) and clipped to [0, 1]
    forwards: float  # cost in batch-1 forward passes (CPU time at 128 and 224 px): estimate = forwards * forward time


# The one extension point: a new method is one `raw` function and one entry here.
METHODS: dict[str, Method] = {
    "gradcam": Method("Grad-CAM", _gradcam_raw, 1.0, 1.3),
    # Pixel-level maps have a few extreme pixels; like Captum's visualize_image_attr, clip the top 2%.
    "integrated_gradients": Method("Integrated Gradients", _integrated_gradients_raw, 0.98, 24.0),
    "occlusion": Method("Occlusion", _occlusion_raw, 1.0, 35.0),
}


def _training_flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _restore_flags(model: nn.Module, flags: list[bool]) -> None:
    # Module by module: a frozen layer's batch norm may be in eval mode inside a model that is training.
    for m, flag in zip(model.modules(), flags):
        m.training = flag


def explain_tensors(
    model: nn.Module, x: torch.Tensor, method: str = "gradcam", target: Target = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`explain`'s heatmaps and logits, and the pooled features [B, 512] of the same pass (`pooled_and_logits`), left
    on `x`'s device: no copy to the host, so a CUDA graph can hold it all."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
    if x.dim() != 4:
        raise ValueError(f"expected a batch [B, 3, H, W], got shape {tuple(x.shape)}")
    spec = METHODS[method]
    flags = _training_flags(model)
    switch = any(flags)  # most callers hand over a model in eval mode already: then there is nothing to switch back
    if switch:
        model.eval()
    try:
        raw, logits, pooled = spec.raw(model, x, target)
    finally:
        if switch:
            _restore_flags(model, flags)
    raw = raw.detach().float()
    flat = raw.flatten(1)
    peak = flat.amax(1) if spec.scale_quantile >= 1 else torch.quantile(flat, spec.scale_quantile, dim=1)
    return (raw / peak.clamp_min(1e-12).view(-1, 1, 1)).clamp(0, 1), logits.detach(), pooled


def explain(
    model: nn.Module, x: torch.Tensor, method: str = "gradcam", target: Target = None
) -> tuple[np.ndarray, torch.Tensor]:
    """Heatmaps [B, H, W] float32 in [0, 1] at the input's size from `method` (a key of METHODS), and the logits.

    `x` is a normalised model input [B, 3, H, W]; `target` is a class index (or one per image), by default the
    predicted class. The model runs in eval mode (batch norm must not update from the image being explained) and
    is left in the mode it was in. A map with no positive evidence stays all zero.
    """
    maps, logits, _ = explain_tensors(model, x, method, target)
    return maps.cpu().numpy(), logits


def timed_explain(
    model: nn.Module, x: torch.Tensor, method: str = "gradcam", target: Target = None
) -> tuple[np.ndarray, torch.Tensor, float]:
    """`explain`, and the seconds it took (wall clock), so a screen can show each method's cost."""
    t0 = time.perf_counter()
    maps, logits = explain(model, x, method, target)
    return maps, logits, time.perf_counter() - t0


def estimate_seconds(method: str, forward_seconds: float) -> float:
    """A method's expected run time for one image, from the time of one forward pass (e.g. a prediction's)."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method].forwards * forward_seconds


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = None) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM heatmaps [B, H, W] in [0, 1] at the input's size, and the logits [B, classes] (see `explain`).

    The network is run once: the trunk without gradients, only the last block and the head with them, so an
    explanation costs little more than a prediction."""
    return explain(model, x, "gradcam", target)


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
