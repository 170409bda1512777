"""The reliability diagram: does "90 %" mean right 90 % of the time? Drawn with `Figure`, never pyplot.

`reliability_figure` takes what `cxr.train.calibration.measure_calibration` returns (the temperature, the ECE
and the reliability bins before and after scaling) and draws two panels side by side, before and after: in each
confidence bin a bar as high as the share of its X-rays the model got right, the diagonal a perfectly calibrated
model would follow, and the gap to it shaded. Bars under the diagonal are over-confidence. `calibration_sentences`
says the same in words for a student; `calibrated` gives an `Interpretation` the percentages the model is used with.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cxr.explain.interpret import Interpretation
from cxr.train.calibration import Bin, apply_temperature, confidence_words, log_of

COLORS = {"accuracy": "#4c78a8", "gap": "#e45756", "diagonal": "#555555"}


def _bins(measured: dict[str, Any], side: str) -> list[Bin]:
    try:
        return [Bin(**b) for b in measured["reliability"][side]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"the calibration record has no reliability bins {side!r} scaling ({e})") from e


def reliability_figure(measured: dict[str, Any], what: str = "test X-rays") -> Figure:
    """Before and after temperature scaling: accuracy per confidence bin against the diagonal, ECE in the title."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    t = float(measured["temperature"])
    titles = {"before": "Before: the network's own percentages",
              "after": f"After: divided by T = {t:.2f}" if t != 1 else "After: no temperature fitted (T = 1)"}
    for ax, side in zip(axes, ("before", "after")):
        bins = _bins(measured, side)
        filled = [b for b in bins if b.count]
        centres, width = np.array([(b.low + b.high) / 2 for b in filled]), bins[0].high - bins[0].low
        accuracy, confidence = np.array([b.accuracy for b in filled]), np.array([b.confidence for b in filled])
        ax.bar(centres, accuracy, width=width * 0.95, color=COLORS["accuracy"], label="right this often")
        # The gap from each bar to the bin's mean confidence: what the ECE adds up, weighted by the counts.
        ax.bar(centres, confidence - accuracy, bottom=accuracy, width=width * 0.95, color=COLORS["gap"], alpha=0.35,
               hatch="//", edgecolor=COLORS["gap"], label="gap to what it said")
        ax.plot([0, 1], [0, 1], linestyle="--", color=COLORS["diagonal"], label="perfectly calibrated")
        for b in filled:
            ax.text((b.low + b.high) / 2, max(b.accuracy, b.confidence) + 0.01, str(b.count), ha="center",
                    va="bottom", fontsize=7, color="#333333")  # how many X-rays: a bar of 2 says little
        ax.set(xlim=(0, 1), ylim=(0, 1.08), yticks=np.linspace(0, 1, 6),  # room above 1 for the counts
               xlabel="what it said (confidence of its answer)", title=f"{titles[side]}\nECE {measured['ece'][side]:.3f}")
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"how often it was right ({what})")
    axes[0].legend(loc="upper left", fontsize=8)
    return fig


def calibrated(interp: Interpretation, temperature: float) -> Interpretation:
    """The same images as the model is used after training: probabilities divided by `temperature` (as `Classifier`
    gives them) and each image's loss recomputed from them. The calls, so the confusion matrix, do not change."""
    if temperature == 1.0:
        return interp
    probs = apply_temperature(log_of(interp.probabilities), temperature).double().numpy()
    losses = -np.log(np.clip(probs[np.arange(len(interp)), interp.y_true], 1e-12, None))
    return replace(interp, probabilities=probs, losses=losses)


def calibration_sentences(measured: dict[str, Any]) -> dict[str, str]:
    """Per side ('before', 'after'), the best-filled bin in words, e.g. 'when it says about 90 %, it is right 72 %
    of the time (40 X-rays)', or '' when no bin holds an image."""
    return {side: confidence_words(_bins(measured, side)) for side in ("before", "after")}
