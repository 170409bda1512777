"""The sanity check of Adebayo et al. (NeurIPS 2018) for explanations: a map that barely changes when the model's
weights are randomised explains the image, not the model. `randomized_copy` makes the randomised model (the model
itself untouched), `compare_maps` scores two maps' agreement as a rank correlation, and `sanity_words` says the
result to a student in plain words (never "nan": an empty map is named as such)."""

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


def sanity_words(trained: "np.ndarray | torch.Tensor", randomised: "np.ndarray | torch.Tensor") -> str:
    """The sanity check for one pair of maps (the trained model's, then its random-weights copy's), in a sentence a
    student can read: how alike they are on a scale they are told, and what that means; or, when a map is empty or
    flat (it points nowhere, so there is no order to compare), which one and what that says."""
    flat = [float(np.ptp(np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m))) == 0
            for m in (trained, randomised)]
    rho = math.nan if any(flat) else compare_maps(trained, randomised)
    if flat[0]:
        return ("this model's map is empty: it found no evidence for this class anywhere, so there is nothing to "
                "compare.")
    if flat[1] or not math.isfinite(rho):
        return ("the random-weights model finds no evidence for this class at all, while this model does: the map "
                "depends on what the model learned.")
    alike = (f"similarity to its random-weights map {rho:.2f} (1: the same places, hottest to coldest; 0: unrelated; "
             f"below 0: the reverse)")
    if rho > 0.7:
        return alike + ": nearly the same without training, so this map says little about what the model learned."
    if rho > 0.3:
        return alike + ": partly the same, so read it with care."
    return alike + ": different, so this map depends on what the model learned."
