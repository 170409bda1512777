"""Is this image like the X-rays the model learned from? An out-of-distribution check, fitted at the end of a run.

A classifier answers every question it is asked: a holiday photo gets "COVID 78 %" as readily as an X-ray does. The
check measures how far an image's pooled features (the 512 numbers `fc` reads) lie from those of the training
X-rays: the Mahalanobis distance to the nearest class mean under one covariance shared by all classes (Lee et al.,
NeurIPS 2018). A few hundred images cannot pin down 512 x 512 covariances, so the covariance is shrunk towards a
scaled identity by the Ledoit-Wolf rule. The threshold is the distance that 95 % of the validation X-rays stay
under: images the model never trained on, so about 95 % of new X-rays like them pass, and one in twenty is flagged.

`fit_ood` makes an `OodFit` from a model and batches of images; it travels in the checkpoint as plain tensors and
numbers (`to_dict`, `from_dict`), and `score` turns the pooled features of any forward pass into distances in units
of the threshold: at most 1 looks like the training data. The score says "unlike the training images", not "not an
X-ray": an X-ray from another hospital may fail it, and a near copy of a training image passes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from cxr.data.transforms import to_model_input
from cxr.explain.maps import pooled_and_logits

METHOD = "mahalanobis"  # what a checkpoint's `ood` field holds (a later method would be another name)
PASS_RATE = 0.95  # the share of validation X-rays the threshold lets through
FIT_IMAGES = 600  # training images fitted at most: enough for the means and a shrunk covariance, a few seconds on a CPU


@dataclass(frozen=True)
class OodFit:
    """Class means and a shared precision matrix of training features, and the validation threshold."""

    means: torch.Tensor  # [classes, features] mean pooled features of each class's training images
    precision: torch.Tensor  # [features, features] inverse of the shared, shrunk covariance
    threshold: float  # the Mahalanobis distance PASS_RATE of the validation images stay at or under
    pass_rate: float  # the share of validation images at or under `threshold` (PASS_RATE, rounded up by one image)
    images: int  # training images fitted
    val_images: int  # validation images the threshold was chosen on
    shrinkage: float  # how far the covariance was pulled towards a scaled identity (0: not at all, 1: fully)
    seconds: float  # what the fit cost, features included

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance [B] of pooled features [B, D] to the nearest class mean."""
        if pooled.dim() != 2 or pooled.shape[1] != self.means.shape[1]:
            raise ValueError(f"expected pooled features [B, {self.means.shape[1]}], got shape {tuple(pooled.shape)}")
        diff = pooled.detach().float().cpu()[:, None, :] - self.means[None]  # [B, classes, D]
        squared = torch.einsum("bcd,de,bce->bc", diff, self.precision, diff)
        return squared.amin(1).clamp_min(0).sqrt()

    def score(self, pooled: torch.Tensor) -> torch.Tensor:
        """Distance in units of the threshold [B]: at most 1 looks like the training data, more does not."""
        return self.distance(pooled) / self.threshold

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers, as a checkpoint stores them (read back with `torch.load(weights_only=True)`)."""
        return {"method": METHOD, "means": self.means.clone(), "precision": self.precision.clone(),
                "threshold": self.threshold, "pass_rate": round(self.pass_rate, 4), "images": self.images,
                "val_images": self.val_images, "shrinkage": self.shrinkage, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, saved: Any) -> "OodFit | None":
        """The fit a checkpoint stored, or None for an older checkpoint (no field) or one it cannot use."""
        if not isinstance(saved, dict) or saved.get("method") != METHOD:
            return None
        means, precision = saved.get("means"), saved.get("precision")
        if not (isinstance(means, torch.Tensor) and isinstance(precision, torch.Tensor) and means.dim() == 2
                and precision.shape == (means.shape[1], means.shape[1])):
            return None
        threshold = float(saved.get("threshold", 0.0))
        if not (math.isfinite(threshold) and threshold > 0):
            return None
        return cls(means=means.float(), precision=precision.float(), threshold=threshold,
                   pass_rate=float(saved.get("pass_rate", PASS_RATE)), images=int(saved.get("images", 0)),
                   val_images=int(saved.get("val_images", 0)), shrinkage=float(saved.get("shrinkage", 0.0)),
                   seconds=float(saved.get("seconds", 0.0)))


def spread(ids: Sequence[int], most: int = FIT_IMAGES) -> list[int]:
    """At most `most` of `ids`, evenly spaced through them (a split is shuffled, so every class is there)."""
    if len(ids) <= most:
        return list(ids)
    step = len(ids) / most
    return [ids[int(k * step)] for k in range(most)]


@torch.inference_mode()
def features_of(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                device: "str | torch.device" = "cpu", amp_dtype: torch.dtype | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features [N, D] (float32, on the CPU) and labels [N] of uint8 image batches, as evaluation prepares
    them (no augmentation). Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    features, labels = [], []
    try:
        for images, y in batches:
            x = to_model_input(images.to(device, non_blocking=True))
            with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pooled, _ = pooled_and_logits(model, x)
            features.append(pooled.float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("no readable images to fit the out-of-distribution check on")
    return torch.cat(features), torch.cat(labels)


def ledoit_wolf(centered: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The covariance of `centered` rows [N, D] shrunk towards mu * I (mu: the mean variance), and the shrinkage,
    by Ledoit and Wolf's formula (as scikit-learn's `ledoit_wolf_shrinkage`). float64 throughout."""
    x = centered.double()
    n, d = x.shape
    cov = x.T @ x / n
    mu = float(cov.trace()) / d
    squared = x * x
    beta_ = float((squared.T @ squared).sum())
    delta_ = float((cov * cov).sum())
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * float(cov.trace()) + d * mu * mu) / d
    shrinkage = 0.0 if delta <= 0 else min(beta, delta) / delta
    eye = torch.eye(d, dtype=x.dtype)
    return (1 - shrinkage) * cov + shrinkage * mu * eye + 1e-9 * max(mu, 1e-12) * eye, shrinkage


def fit_features(train: torch.Tensor, labels: torch.Tensor, val: torch.Tensor, pass_rate: float = PASS_RATE) -> OodFit:
    """An OodFit from training features [N, D] with their labels, and the threshold from validation features [M, D]."""
    if not 0 < pass_rate < 1:
        raise ValueError(f"pass_rate must lie between 0 and 1, got {pass_rate}")
    if len(train) < 2 or len(val) < 1:
        raise ValueError(f"the out-of-distribution check needs 2 training images and 1 validation image, got "
                         f"{len(train)} and {len(val)}")
    classes = sorted(set(labels.tolist()))
    means = torch.stack([train[labels == c].double().mean(0) for c in classes])
    # One covariance for all classes (Lee et al.): each image's offset from its own class mean.
    centered = train.double() - means[[classes.index(c) for c in labels.tolist()]]
    cov, shrinkage = ledoit_wolf(centered)
    fit = OodFit(means=means.float(), precision=torch.linalg.inv(cov).float(), threshold=1.0, pass_rate=0.0,
                 images=len(train), val_images=len(val), shrinkage=shrinkage, seconds=0.0)
    distances = fit.distance(val)
    # The smallest distance that `pass_rate` of the validation images stay at or under ("higher": never fewer).
    threshold = max(float(torch.quantile(distances.double(), pass_rate, interpolation="higher")), 1e-6)
    return replace(fit, threshold=threshold, pass_rate=float((distances <= threshold).float().mean()))


def fit_ood(model: nn.Module, train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            val_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: "str | torch.device" = "cpu",
            amp_dtype: torch.dtype | None = None, pass_rate: float = PASS_RATE) -> OodFit:
    """Fit the check on the features of `train_batches` (uint8 images and labels, e.g. `iterate_batches`) and choose
    its threshold on `val_batches`, images the model did not train on."""
    t0 = time.perf_counter()
    train, labels = features_of(model, train_batches, device, amp_dtype)
    val, _ = features_of(model, val_batches, device, amp_dtype)
    return replace(fit_features(train, labels, val, pass_rate), seconds=time.perf_counter() - t0)
