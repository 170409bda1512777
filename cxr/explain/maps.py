"""Explanations with Captum: which regions of the X-ray pushed the model towards a class, three ways.

Three methods answer the question differently, and showing them side by side is the lesson: where they disagree,
no single map is "the" reason.
- Grad-CAM takes the feature maps of one stage of the network, weights each by how much the class score rises when
  it rises (the averaged gradient), sums, and keeps the positive part. Cheap (about one forward pass). The stage is
  chosen by input size so the map has at least `MIN_GRID` cells per side (`map_grid`): layer3 at 224 px (14 x 14),
  layer2 from 56 px (14 x 14 at 112); at layer4 a 112 px input would give 4 x 4 cells, too coarse to tell a lung
  from the heart.
- Integrated Gradients adds up the input gradients along a straight path from a black image to the X-ray: pixel
  level, noisy, and it credits every pixel that differs from black.
- Occlusion blacks out one square patch at a time and records how much the class score drops: slow (one forward
  pass per patch position), but it asks the model directly, with no gradients.
The methods differ in one function each, registered in `METHODS`; `explain` does what they share (eval mode and
its restoration, the target class, scaling to [0, 1] per image), so drawing and the app never need to know which
one ran. `explain` returns float heatmaps [B, H, W] in [0, 1] at input size; `cxr.explain.draw` draws them
(`overlay`, `draw_outline`, also importable from here). `cam_raw` computes a class-activation map at any stages
with either rule (Grad-CAM, or Layer-CAM's per-element weights), for `benchmarks/map_grid.py`, which chose the
default. The sanity check of Adebayo et al. (randomised weights) lives in `cxr.explain.sanity`. No hook outlives a
call, and none is placed on the shared model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, LayerGradientXActivation, Occlusion
from torch import nn

from cxr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cxr.explain.draw import OVERLAY_COLORMAP, draw_outline, overlay  # noqa: F401 (drawing, imported from here too)
from cxr.explain.grid import FINE_GRID, MIN_GRID, STAGES, map_grid, map_stage, stage_grid  # noqa: F401 (here too)

# One class for every image, one per image (None in the list: that image's predicted class), or None: each image's
# predicted class.
Target = Union[int, list[Union[int, None]], None]
IG_STEPS = 16  # points on the path from black to the image: 16 keeps a 224 px map near 2 s on two cores
OCCLUSION_STRIDE = 8  # patch positions per side (stride = side / 8); each patch is two strides wide (side / 4)
CAM_RULES = ("grad-cam", "layer-cam")


class _Head(nn.Module):
    """The last block of the first explained stage, the stages after it, pooling and the classifier; `taps` mark
    each explained stage's output for Captum (identity modules of this per-call head, not of the shared model)."""

    def __init__(self, model: nn.Module, stages: Sequence[str]):
        super().__init__()
        self.first, self.block = stages[0], getattr(model, stages[0])[-1]
        self.later = nn.ModuleDict({s: getattr(model, s) for s in STAGES[STAGES.index(stages[0]) + 1 :]})
        self.taps = nn.ModuleDict({s: nn.Identity() for s in stages})
        self.pool, self.fc = model.avgpool, model.fc

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits, and the pooled 512 features they are computed from (what `cxr.explain.ood` measures)."""
        x = self.taps[self.first](self.block(features))
        for name, stage in self.later.items():
            x = stage(x)
            x = self.taps[name](x) if name in self.taps else x
        pooled = torch.flatten(self.pool(x), 1)
        return self.fc(pooled), pooled


def _trunk(model: nn.Module, x: torch.Tensor, stage: str) -> torch.Tensor:
    """ResNet18 up to (not including) the last block of `stage`."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for name in STAGES[: STAGES.index(stage)]:
        x = getattr(model, name)(x)
    for block in getattr(model, stage)[:-1]:
        x = block(x)
    return x


def pooled_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass without gradients: the pooled features [B, 512] that `fc` reads, and the logits it makes of them."""
    with torch.no_grad():
        logits, pooled = _Head(model, ("layer4",))(_trunk(model, x, "layer4"))
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


def cam_raw(model: nn.Module, x: torch.Tensor, target: Target = None, stages: Sequence[str] = (),
            rule: str = "grad-cam") -> tuple[torch.Tensor, ...]:
    """A class-activation map [B, H, W] (>= 0, at input size, not yet scaled), the logits and the pooled features,
    from one pass.

    `stages`: where in the network (names in STAGES, shallowest first); by default `map_stage` of the input size.
    `rule`: "grad-cam" weighs each feature map by its gradient averaged over the map (one weight per channel; one
    stage only; where its map of an image is empty, that image gets the stage's Layer-CAM instead); "layer-cam"
    (Jiang et al., 2021) weighs each element by its own positive gradient, so a channel
    can count in one place and not another; over several stages each stage's map is scaled to peak 1 and averaged.
    The trunk below the first stage runs once without gradients; only the rest of the network records them."""
    stages = tuple(stages) or (map_stage(min(x.shape[-2:])),)
    if rule not in CAM_RULES:
        raise ValueError(f"unknown CAM rule {rule!r}; choose from {', '.join(CAM_RULES)}")
    if any(s not in STAGES for s in stages) or list(stages) != sorted(set(stages), key=STAGES.index):
        raise ValueError(f"stages must be distinct names of {', '.join(STAGES)}, shallowest first, got {stages!r}")
    if rule == "grad-cam" and len(stages) != 1:
        raise ValueError(f"Grad-CAM is taken at one stage, got {len(stages)}: {', '.join(stages)}")
    with torch.no_grad():
        features = _trunk(model, x, stages[0])  # most of the network, run once, recording no gradients
    head = _Head(model, stages)  # a per-call module: Captum's hooks go on its taps, never on the shared model
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
    taps = [head.taps[s] for s in stages]
    if rule == "grad-cam":
        # Captum: gradient of the target score w.r.t. the stage's feature maps, averaged per map, times the maps.
        cams = [LayerGradCam(scores, taps[0]).attribute(features, relu_attributions=True)]
        empty = cams[0].flatten(1).amax(1) <= 0  # the weighted sum is negative everywhere: no overlay at all
        if not (x.is_cuda and torch.cuda.is_current_stream_capturing()) and bool(empty.any()):
            # Only there (it costs one more backward pass): the same stage's Layer-CAM, whose per-element weights
            # keep the positive evidence that averaging a channel's gradients cancelled (at 80 px, on a quarter of
            # one class of `benchmarks/map_grid.py`'s X-rays). A blank picture would tell a class nothing.
            layer = LayerGradientXActivation(scores, taps[0]).attribute(features).clamp_min(0).sum(1, keepdim=True)
            cams = [torch.where(empty.view(-1, 1, 1, 1), layer, cams[0])]
    else:
        # Captum: gradient times activation per element. The activations follow a ReLU (>= 0), so keeping the
        # positive part of the product keeps exactly Layer-CAM's ReLU(gradient) x activation; then sum the channels.
        attrs = LayerGradientXActivation(scores, taps).attribute(features)
        cams = [a.clamp_min(0).sum(1, keepdim=True) for a in (attrs if isinstance(attrs, list) else [attrs])]
    size = tuple(x.shape[-2:])
    cams = [LayerAttribution.interpolate(c, size, interpolate_mode="bilinear")[:, 0] for c in cams]
    if len(cams) > 1:
        cams = [sum(c / c.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1) for c in cams) / len(cams)]
    return cams[0], seen["logits"].detach(), seen["pooled"].detach()


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
    # Cost in batch-1 forward passes by input size (`python -m benchmarks.explain_times X --threads 1`, rounded up a
    # tenth): IG and occlusion run batched, which pays off more at small sizes; Grad-CAM at 64 px runs more stages.
    forwards: dict[int, float]


# The one extension point: a new method is one `raw` function and one entry here.
METHODS: dict[str, Method] = {
    "gradcam": Method("Grad-CAM", cam_raw, 1.0, {64: 2.2, 80: 2.2, 96: 2.0, 112: 2.0, 224: 1.6}),
    # Pixel-level maps have a few extreme pixels; like Captum's visualize_image_attr, clip the top 2%.
    "integrated_gradients": Method("Integrated Gradients", _integrated_gradients_raw, 0.98,
                                   {64: 19.0, 80: 22.0, 96: 25.0, 112: 30.0, 224: 38.0}),
    "occlusion": Method("Occlusion", _occlusion_raw, 1.0, {64: 26.0, 80: 31.0, 96: 35.0, 112: 38.0, 224: 52.0}),
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


def estimate_seconds(method: str, forward_seconds: float, image_size: int) -> float:
    """A method's expected run time for one image at `image_size` px, from the time of one forward pass (e.g. a
    prediction's): its cost at the nearest measured size at or above, so the estimate errs long, not short."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
    costs = METHODS[method].forwards
    return costs[min((s for s in costs if s >= image_size), default=max(costs))] * forward_seconds


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = None) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM heatmaps [B, H, W] in [0, 1] at the input's size, and the logits [B, classes] (see `explain`).

    Taken at the stage `map_stage` chooses for the input size. The network is run once: the trunk without
    gradients, only the explained stage's last block and what follows with them, so an explanation costs little
    more than a prediction."""
    return explain(model, x, "gradcam", target)
