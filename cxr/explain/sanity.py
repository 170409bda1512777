"""The sanity check of Adebayo et al. (NeurIPS 2018) for explanations: a map that barely changes when the model's
weights are randomised explains the image, not the model. `randomized_copy` makes the randomised model (the model
itself untouched) and `compare_maps` scores two maps' agreement as a rank correlation."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of `model` with every weight re-initialised at random (the model itself is untouched).

    This is full randomisation, all layers at once; Adebayo et al. also randomise cascading from the top layer
    down, which shows where maps stop changing, but the whole-network version answers the yes/no question more
    simply. Convolutions get torchvision's ResNet initialisation, batch norm is reset to identity, everything else
    its layer's default. The global random state is left as it was."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in clone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif hasattr(m, "reset_parameters"):
                m.reset_parameters()  # linear: uniform weights; batch norm: scale 1, shift 0, fresh running stats
    return clone


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties sharing their mean rank (maps have many equal zeros; arbitrary tie order would fake
    agreement)."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse.ravel()]


def compare_maps(a: "np.ndarray | torch.Tensor", b: "np.ndarray | torch.Tensor") -> float:
    """Spearman rank correlation of two heatmaps of the same shape, in [-1, 1]: 1 when they order the pixels the
    same way. NaN when either map is constant (it orders nothing)."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64).ravel()
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps to compare must have the same shape, got {a.size} and {b.size} values")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum()) / denom if denom > 0 else math.nan
