"""One X-ray classified and explained for the Classify tab: the probabilities, the Grad-CAM overlay and the caption
that says what the map shows (its coarseness, the lung focus, the dataset's label when the image comes from the
dataset; for a model still training, how often it has been right so far), and the `Session` a visitor keeps to
redraw or re-explain the same X-ray. The probabilities are calibrated by the model's temperature (`Classifier`).

Every handler of the tab that shows a result calls `classify`; the model itself runs in one call to
`Classifier.predict`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image

from cxr.data.images import read_xray
from cxr.data.index import display_name
from cxr.data.lungs import area_share, lung_focus, mask_path
from cxr.explain.hidden import Hidden, as_seen, draw_map, hidden_region
from cxr.explain.maps import OVERLAY_COLORMAP, draw_outline, map_grid, map_stage, overlay
from cxr.predict import DISPLAY_SIDE, Classifier

from .context import AppContext
from .labels import percent
from .limits import forget_upload
from .messages import SOMETHING_WRONG, not_yet, user_error
from .inference import predict_batched

log = logging.getLogger(__name__)
PREDICTED = "predicted class"
# What Classify says beside the probabilities of an image that fails the model's out-of-distribution check.
UNLIKE_TRAINING = ("This does not look like the chest X-rays this model learned from: its answer means nothing "
                   "here.")
NO_CHECK = ("This model carries no check of whether an image looks like its training X-rays (a model gets one when "
            "its run ends), so nothing here says whether its answer means anything.")
MAX_XRAY_MB = 20  # an X-ray PNG is 0.1 to 5 MB, a DICOM up to ~20 MB (the page allows larger files for models)


@dataclass
class Session:
    """What a visitor's page keeps of the X-ray on screen, to redraw it at another opacity or explain it again."""

    image: np.ndarray  # the decoded X-ray, uint8
    heat: np.ndarray  # the map, uint8 0..255: 8 bits are plenty for redrawing
    mask: np.ndarray | None = None  # the dataset's lung mask at the image's size, when it has one
    truth: str | None = None  # the dataset's label, for an image from the dataset
    hidden: Hidden | None = None  # what the model never saw (a run that hid the lungs), at the image's size


@dataclass
class Classified:
    """One classification as the tab shows it."""

    probs: dict[str, float]  # by display name
    overlay: np.ndarray
    image: np.ndarray
    caption: str
    session: Session
    classes: tuple[str, ...]  # the model's classes: what the "explain which class" list offers
    ood_score: float | None = None  # distance from the training X-rays in units of the threshold; None: no check

    @property
    def unlike_training(self) -> bool:
        """The image failed the model's out-of-distribution check: its answer is no answer."""
        return self.ood_score is not None and self.ood_score > 1.0

    @property
    def ood_words(self) -> str:
        """The check's verdict in a sentence or two, for beside the probabilities (empty when the image passes)."""
        if not self.unlike_training:
            return ""
        return (f"**{UNLIKE_TRAINING}** Its features lie {self.ood_score:.1f} times as far from theirs as the check "
                "allows (a limit that 95 % of its validation X-rays stay under).")


def coarseness(image_size: int) -> str:
    """How fine the map is, from the model's input size: Grad-CAM is taken where ResNet18 still has `map_grid`
    cells per side (112 px: layer2, 14 x 14), and the overlay cannot show detail smaller than one cell."""
    cells = map_grid(image_size)
    return (f"The map has {cells} x {cells} cells at this model's {image_size} px input (Grad-CAM at "
            f"{map_stage(image_size)}), each cell about {100 // cells} % of the width: it shows no finer detail.")


def focus_words(heatmap: np.ndarray, mask: np.ndarray | None, outlined: bool = True) -> str:
    """Lung focus in a sentence, against the share a map spread evenly would get; or why there is none.
    `outlined`: whether the picture outlines the lungs (not when it outlines a hidden box instead)."""
    if mask is None:
        return ("No lung mask for this image, so no lung focus: it is measured on dataset images that come with "
                "the database's lung masks.")
    focus, area = lung_focus(heatmap, mask), area_share(mask)
    if focus != focus:
        return "The map is empty (no evidence for this class), so it has no lung focus."
    where = " (outlined in magenta)" if outlined else ""
    return (f"**Lung focus {percent(focus)}**: that share of the map lies inside the lungs{where}; "
            f"a map spread evenly would put {percent(area)} there.")


def training_words(metrics: dict[str, Any]) -> str:
    """For a model still training: how often its weights have been right so far, beside its answer, and that its
    percentages are not calibrated yet (the run fits its temperature when it ends)."""
    accuracy = metrics.get("val_accuracy")
    so_far = (f"these weights were right on {100 * accuracy:.0f} % of the validation X-rays so far"
              if isinstance(accuracy, (int, float)) else "these weights have not been validated yet")
    return (f"**Still training:** {so_far}. Its percentages are the network's own until the run ends and calibrates "
            "them.\n\n")


def _size_check(file: str) -> None:
    try:
        size = os.path.getsize(file)
    except OSError:
        raise ValueError(f"{Path(file).name} is no longer on the server (uploads are kept a few minutes): drop it again") from None
    if size > MAX_XRAY_MB * 2**20:
        raise ValueError(f"{Path(file).name} is {size / 2**20:.0f} MB; X-rays of at most {MAX_XRAY_MB} MB are accepted")


def draw(session: Session, alpha: float) -> np.ndarray:
    """The session's map over its X-ray at opacity `alpha`: for a model that hid the lungs, over the X-ray as it
    saw it, the hidden region outlined (`cxr.explain.hidden`); else with the lungs outlined when there is a mask."""
    if session.hidden is not None and session.hidden.mode != "none":
        return draw_map(session.image, session.heat / 255.0, alpha, session.hidden)
    shown = overlay(session.image, session.heat / 255.0, alpha)
    return draw_outline(shown, session.mask) if session.mask is not None else shown


def classify(ctx: AppContext, file: str | None, checkpoint: str | None, target: str, alpha: float,
             source: Any = None, mask: np.ndarray | None = None, truth: str | None = None) -> Classified:
    """Classify an uploaded `file` (or a decoded `source` image) with model `checkpoint` and explain class `target`
    (PREDICTED: the model's answer). `mask`: the dataset's lung mask; `truth`: the dataset's label, which the
    caption sets beside the model's answer. Raises gr.Error with one sentence."""
    if not file and source is None:
        raise user_error("Drop an X-ray image (PNG, JPEG or DICOM) into the box first.")
    if not checkpoint:  # the page counts down to the first model and classifies the X-ray then (`classify_waiting`)
        raise not_yet(ctx.no_model_yet(markdown=False, countdown=False))
    try:
        clf = ctx.classifier(checkpoint)
        if target not in (None, PREDICTED, *clf.classes):
            raise ValueError("this model cannot explain that class; choose one of its classes")
        if source is None:
            _size_check(file)
        pred = predict_batched(ctx.inference, clf, file if source is None else as_trained(clf, source, mask),
                               None if target in (None, PREDICTED) else target)
        image = np.asarray(pred.image if source is None else source.convert("L"))  # as given, its lungs not hidden
        if mask is not None and mask.shape != image.shape:
            mask = None  # not this picture's mask
        hidden = hidden_region(clf.checkpoint.config, image.shape, mask)  # a model file's odd settings: a sentence
    except ValueError as e:
        raise user_error(str(e)) from None
    except Exception:  # a bug, not the user's file: log it here, tell them plainly, keep serving
        log.exception("classify failed")
        raise user_error(SOMETHING_WRONG) from None
    finally:
        if source is None:
            forget_upload(ctx, file)
    session = Session(image, np.round(pred.heatmap * 255).astype(np.uint8), mask, truth, hidden)
    verdict = "" if truth is None else (
        f"**Labelled {display_name(truth)} in the dataset**: the model says {display_name(pred.label)}, "
        + ("right.\n\n" if truth == pred.label else "**wrong**.\n\n"))
    if checkpoint == ctx.running_checkpoint():
        verdict = training_words(clf.checkpoint.metrics) + verdict
    synthetic = " (synthetic model)" if clf.checkpoint.synthetic else ""
    unlike = pred.looks_like_training_data is False
    check = f"**{UNLIKE_TRAINING}**\n\n" if unlike else f"{NO_CHECK}\n\n" if pred.ood_score is None else ""
    caption = (f"{check}{verdict}Grad-CAM for **{display_name(pred.target)}**{synthetic}. "
               f"{coarseness(clf.checkpoint.image_size)}\n\n{focus_words(pred.heatmap, mask, hidden.mode != 'box')}")
    if hidden.sentence:
        caption = f"**{hidden.sentence}**\n\n{caption}"
    probs = {display_name(k): v for k, v in pred.probabilities.items()}
    return Classified(probs, draw(session, alpha), image, caption, session, tuple(clf.classes), pred.ood_score)


def as_trained(clf: Classifier, source: Image.Image, mask: np.ndarray | None) -> Image.Image:
    """For a model that hid the lungs by their masks, `source` with its lungs black, as in every image it trained
    on (a box, `Classifier.model_input` hides itself); otherwise `source` as it is."""
    pixels = np.asarray(source.convert("L"))
    mask = mask if mask is not None and mask.shape == pixels.shape else None  # only this picture's own mask
    hidden = hidden_region(clf.checkpoint.config, pixels.shape, mask)
    return Image.fromarray(as_seen(pixels, hidden)) if hidden.mode == "mask" else source


def explain_again(ctx: AppContext, session: Session, checkpoint: str, target: str, alpha: float) -> Classified:
    """The X-ray of `session` classified and explained again (another model, or another class), its label kept."""
    return classify(ctx, None, checkpoint, target, alpha, source=Image.fromarray(session.image), mask=session.mask,
                    truth=session.truth)


def classify_id(ctx: AppContext, i: int, checkpoint: str | None, target: str, alpha: float) -> Classified:
    """Classify the dataset image with index `i` (an example, or a top loss opened from Evaluate)."""
    if not isinstance(i, int) or not 0 <= i < len(ctx.index.files):
        raise user_error("That example is no longer available.")
    try:
        image = read_xray(ctx.index.files[i], max_side=DISPLAY_SIDE)
    except ValueError as e:
        raise user_error(str(e)) from None
    return classify(ctx, None, checkpoint, target, alpha, source=image,
                    mask=_dataset_mask(ctx.index.files[i], image.size), truth=ctx.index.classes[ctx.index.labels[i]])


def _dataset_mask(file: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The database's lung mask for a dataset image, at the image's size (None when it has none)."""
    path = mask_path(file)
    if path is None:
        return None
    try:
        with Image.open(path) as m:
            return np.asarray(m.convert("L").resize(size, Image.Resampling.NEAREST)) > 127
    except OSError:
        return None


def colour_bar(stops: int = 11) -> str:
    """The overlay's colour scale as HTML: a bar the width of the overlay, low attribution (left) to high (right),
    its gradient sampled from the same colormap the overlay uses."""
    ramp = colormaps[OVERLAY_COLORMAP](np.linspace(0, 1, stops)) * 255
    colours = ", ".join(f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b, _ in ramp)
    return (f"<div role='img' aria-label='colour scale: blue is low attribution, red is high' "
            f"style='height:14px;border-radius:3px;background:linear-gradient(to right, {colours})'></div>"
            "<div style='display:flex;justify-content:space-between;font-size:0.85em'>"
            "<span>low attribution</span><span>high attribution</span></div>")
