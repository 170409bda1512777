"""What a finished run fits on its kept weights and keeps beside them in the checkpoint.

Two small fits, both on images the weights never trained on for their thresholds: the temperature that calibrates
the probabilities, fitted on the validation logits (`cxr.train.calibration`), and the check of whether a new image
looks like the training X-rays, a distance on the pooled features of up to 600 training images with its threshold
set on the validation images (`cxr.explain.ood`). They cost a few seconds at the end of a run.
"""

from __future__ import annotations

from typing import Any

from cxr.explain.ood import fit_ood, spread
from cxr.train.calibration import calibrate
from cxr.train.evaluate import EvalResult
from cxr.train.run import Run


def fit_after_training(run: Run, val: EvalResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """The calibration and the out-of-distribution check of `run.model` (the kept weights, loaded), as the
    checkpoint stores them. `val`: those weights' score on the validation images, with its logits."""
    calibration = calibrate(val.logits, val.y_true).to_dict()
    train, held_out = run.batches(spread(run.split.train)), run.batches(run.split.val)
    ood = fit_ood(run.model, train, held_out, run.device, run.amp_dtype)
    return calibration, ood.to_dict()
