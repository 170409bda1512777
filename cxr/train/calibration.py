"""Calibration: probabilities a class can trust, by temperature scaling (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017).

A network trained with cross-entropy tends to be over-confident: it says "94 %" where it is right far less often.
Temperature scaling divides the logits by one number T fitted on the validation split after training (T > 1
softens over-confident answers, T < 1 sharpens timid ones). Dividing every logit by the same positive T never
changes which class is largest, so accuracy and the confusion matrix stay as they were; only the probabilities
move. `fit_temperature` fits T, `apply_temperature` uses it, `expected_calibration_error` (ECE) and
`reliability_bins` measure how far "says p" is from "is right p of the time", and `calibrate` does all of it on
one labelled set, giving the small `Calibration` record the checkpoint keeps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BINS = 15  # Guo et al.'s choice: fine enough to see the curve, coarse enough that 90 images fill some bins
MIN_IMAGES = 20  # fewer labelled images than this say too little to fit T: keep T = 1 and say so
T_RANGE = (0.05, 20.0)  # beyond these a fit has found a degenerate set (all right, or all wrong), not a scale


@dataclass(frozen=True)
class Bin:
    """One confidence bin: the images whose top probability lies in [low, high)."""

    low: float
    high: float
    confidence: float  # the mean top probability of the images in the bin (0 when empty)
    accuracy: float  # how many of them were called right (0 when empty)
    count: int


@dataclass(frozen=True)
class Calibration:
    """The checkpoint's `calibration` field: T and what it did to the ECE of the set it was fitted on."""

    temperature: float = 1.0
    ece_before: float | None = None
    ece_after: float | None = None
    fitted_on: str = ""  # "validation"
    images: int = 0
    note: str = ""  # why T stayed 1, if it did

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> "Calibration":
        """The record in a checkpoint; an older file (no field, or not a dict) is uncalibrated: T = 1."""
        if not isinstance(value, dict):
            return cls()
        t = value.get("temperature", 1.0)
        t = float(t) if isinstance(t, (int, float)) and math.isfinite(t) and t > 0 else 1.0
        known = {k: value[k] for k in ("ece_before", "ece_after", "fitted_on", "images", "note") if k in value}
        return cls(temperature=t, **known)


def _as_tensor(values: "np.ndarray | torch.Tensor | list", name: str, ndim: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(values) if isinstance(values, list) else values).detach().cpu()
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim > 1 else ''}, got shape {tuple(t.shape)}")
    return t


def _check(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"{probs.shape[0]} rows of probabilities but {labels.shape[0]} labels")
    if labels.numel() and not ((labels >= 0).all() and (labels < probs.shape[1]).all()):
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1} for {probs.shape[1]} classes")


def apply_temperature(logits: "torch.Tensor | np.ndarray", temperature: float) -> torch.Tensor:
    """softmax(logits / T): the calibrated probabilities. Log-probabilities work as logits too (softmax of
    log p / T equals softmax of z / T, the constant per row cancels), so stored probabilities can be re-scaled."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"the temperature must be a positive number, got {temperature}")
    return (torch.as_tensor(logits).float() / temperature).softmax(-1)


def log_of(probs: "torch.Tensor | np.ndarray") -> torch.Tensor:
    """Probabilities as logits for `apply_temperature` (log p, with 0 kept finite)."""
    return torch.as_tensor(probs).double().clamp_min(1e-12).log()


def reliability_bins(probs: "torch.Tensor | np.ndarray", labels: "torch.Tensor | np.ndarray | list",
                     bins: int = BINS) -> list[Bin]:
    """Split the images by their top probability (the confidence of the answer) into `bins` equal-width bins, and
    give each bin's mean confidence, accuracy and count: what a reliability diagram draws."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    probs, labels = _as_tensor(probs, "probabilities", 2).double(), _as_tensor(labels, "labels", 1).long()
    _check(probs, labels)
    confidence, predicted = probs.max(1)
    right = (predicted == labels).double()
    # Bin b holds confidences in [b/bins, (b+1)/bins); a confidence of exactly 1 goes into the last bin.
    which = (confidence * bins).long().clamp(0, bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        out.append(Bin(low=b / bins, high=(b + 1) / bins, count=n,
                       confidence=float(confidence[inside].mean()) if n else 0.0,
                       accuracy=float(right[inside].mean()) if n else 0.0))
    return out


def expected_calibration_error(probs: "torch.Tensor | np.ndarray", labels: "torch.Tensor | np.ndarray | list",
                               bins: int = BINS) -> float:
    """ECE: the gap between confidence and accuracy in each bin, weighted by the share of images in it (0: when
    it says 90 % it is right 90 % of the time, in every bin)."""
    return ece_of(reliability_bins(probs, labels, bins))


def ece_of(bins: list[Bin]) -> float:
    """The ECE of reliability bins already counted."""
    n = sum(b.count for b in bins)
    if n == 0:
        raise ValueError("the expected calibration error needs at least one image")
    return sum(b.count / n * abs(b.accuracy - b.confidence) for b in bins)


def fit_temperature(logits: "torch.Tensor | np.ndarray", labels: "torch.Tensor | np.ndarray | list",
                    steps: int = 50) -> float:
    """The T that minimises the negative log-likelihood of `labels` under softmax(logits / T). Fitted as log T
    (so T stays positive) with L-BFGS, one parameter; clamped to T_RANGE."""
    logits, labels = _as_tensor(logits, "logits", 2).double(), _as_tensor(labels, "labels", 1).long()
    _check(logits, labels)
    if not len(labels):
        raise ValueError("fitting a temperature needs at least one labelled image")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    t = float(log_t.detach().exp())
    return min(max(t, T_RANGE[0]), T_RANGE[1]) if math.isfinite(t) else 1.0


def calibrate(logits: "torch.Tensor | np.ndarray", labels: "torch.Tensor | np.ndarray | list",
              fitted_on: str = "validation", min_images: int = MIN_IMAGES) -> Calibration:
    """Fit T on one labelled set and measure its ECE before and after; with fewer than `min_images` images,
    T = 1 and a note saying why."""
    logits, labels = _as_tensor(logits, "logits", 2).double(), _as_tensor(labels, "labels", 1).long()
    _check(logits, labels)
    n = len(labels)
    before = expected_calibration_error(logits.softmax(1), labels) if n else None
    if n < min_images:
        return Calibration(1.0, before, before, fitted_on, n,
                           note=f"only {n} {fitted_on} images: too few to fit a temperature (at least {min_images}), "
                                "so the probabilities are the model's own (T = 1)")
    t = fit_temperature(logits, labels)
    return Calibration(t, before, expected_calibration_error(apply_temperature(logits, t), labels), fitted_on, n)


def confidence_words(bins: list[Bin]) -> str:
    """The fullest bin in words (the one most answers fall in): 'when it says about 90 %, it is right 72 % of the
    time (40 X-rays)'; '' when every bin is empty."""
    if not any(b.count for b in bins):
        return ""
    b = max(bins, key=lambda b: (b.count, b.confidence))
    return (f"when it says about {100 * b.confidence:.0f} %, it is right {100 * b.accuracy:.0f} % of the time "
            f"({b.count} X-ray{'s' if b.count != 1 else ''})")


def calibration_words(calibration: dict[str, Any]) -> str:
    """A checkpoint's calibration in one line, for the CLI and the model card."""
    c = Calibration.from_dict(calibration)
    if c.note or c.ece_before is None or c.ece_after is None:
        return f"calibration: none (T = 1){': ' + c.note if c.note else ''}"
    return (f"calibration: temperature T = {c.temperature:.2f} fitted on {c.images} {c.fitted_on} images; "
            f"expected calibration error (ECE) {c.ece_before:.3f} before, {c.ece_after:.3f} after")


def measure_calibration(probs: "torch.Tensor | np.ndarray", labels: "torch.Tensor | np.ndarray | list",
                        temperature: float, bins: int = BINS) -> dict[str, Any]:
    """How calibrated a model's own probabilities `probs` are on a labelled set, before and after dividing by
    `temperature`: the JSON `evaluate --json` prints ("temperature", "ece", "nll", "reliability")."""
    scaled = {"before": torch.as_tensor(probs).double(),
              "after": apply_temperature(log_of(probs), temperature).double()}
    found = {k: reliability_bins(p, labels, bins) for k, p in scaled.items()}
    y = _as_tensor(labels, "labels", 1).long()
    # The mean negative log-likelihood: what T was fitted to lower (on validation), measured here too.
    nll = {k: float(F.nll_loss(log_of(p), y)) for k, p in scaled.items()}
    return {"temperature": temperature, "ece": {k: ece_of(v) for k, v in found.items()}, "nll": nll,
            "reliability": {k: [asdict(b) for b in v] for k, v in found.items()}}
