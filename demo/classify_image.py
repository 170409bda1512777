"""One X-ray classified and explained for the Classify tab: the probabilities, the Grad-CAM overlay and the caption
that says what the map shows (its coarseness, the lung focus, the dataset's label when the image comes from the
dataset), and the `Session` a visitor keeps to redraw or re-explain the same X-ray.

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

from cxr.data.images import read_xray
from cxr.data.index import display_name
from cxr.data.lungs import area_share, lung_focus, mask_path
from cxr.explain.maps import draw_outline, map_grid, map_stage, overlay
from cxr.predict import DISPLAY_SIDE

from .context import AppContext
from .labels import percent
from .limits import forget_upload
from .messages import SOMETHING_WRONG, not_yet, user_error
from .inference import predict_batched

log = logging.getLogger(__name__)
PREDICTED = "predicted class"
MAX_XRAY_MB = 20  # an X-ray PNG is 0.1 to 5 MB, a DICOM up to ~20 MB (the page allows larger files for models)


@dataclass
class Session:
    """What a visitor's page keeps of the X-ray on screen, to redraw it at another opacity or explain it again."""

    image: np.ndarray  # the decoded X-ray, uint8
    heat: np.ndarray  # the map, uint8 0..255: 8 bits are plenty for redrawing
    mask: np.ndarray | None = None  # the dataset's lung mask at the image's size, when it has one
    truth: str | None = None  # the dataset's label, for an image from the dataset


@dataclass
class Classified:
    """One classification as the tab shows it."""

    probs: dict[str, float]  # by display name
    overlay: np.ndarray
    image: np.ndarray
    caption: str
    session: Session
    classes: tuple[str, ...]  # the model's classes: what the "explain which class" list offers


def coarseness(image_size: int) -> str:
    """How fine the map is, from the model's input size: Grad-CAM is taken where ResNet18 still has `map_grid`
    cells per side (112 px: layer2, 14 x 14), and the overlay cannot show detail smaller than one cell."""
    cells = map_grid(image_size)
    return (f"The map has {cells} x {cells} cells at this model's {image_size} px input (Grad-CAM at "
            f"{map_stage(image_size)}), each cell about {100 // cells} % of the width: it shows no finer detail.")


def focus_words(heatmap: np.ndarray, mask: np.ndarray | None) -> str:
    """Lung focus in a sentence, against the share a map spread evenly would get; or why there is none."""
    if mask is None:
        return ("No lung mask for this image, so no lung focus: it is measured on dataset images that come with "
                "the database's lung masks.")
    focus, area = lung_focus(heatmap, mask), area_share(mask)
    if focus != focus:
        return "The map is empty (no evidence for this class), so it has no lung focus."
    return (f"**Lung focus {percent(focus)}**: that share of the map lies inside the lungs (outlined in magenta); "
            f"a map spread evenly would put {percent(area)} there.")


def _size_check(file: str) -> None:
    try:
        size = os.path.getsize(file)
    except OSError:
        raise ValueError(f"{Path(file).name} is no longer on the server (uploads are kept a few minutes): drop it again") from None
    if size > MAX_XRAY_MB * 2**20:
        raise ValueError(f"{Path(file).name} is {size / 2**20:.0f} MB; X-rays of at most {MAX_XRAY_MB} MB are accepted")


def draw(session: Session, alpha: float) -> np.ndarray:
    """The session's map over its X-ray at opacity `alpha`, the lungs outlined when there is a mask."""
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
        pred = predict_batched(ctx.inference, clf, source if source is not None else file,
                               None if target in (None, PREDICTED) else target)
    except ValueError as e:
        raise user_error(str(e)) from None
    except Exception:  # a bug, not the user's file: log it here, tell them plainly, keep serving
        log.exception("classify failed")
        raise user_error(SOMETHING_WRONG) from None
    finally:
        if source is None:
            forget_upload(ctx, file)
    image = np.asarray(pred.image)
    if mask is not None and mask.shape != image.shape:
        mask = None  # not this picture's mask
    session = Session(image, np.round(pred.heatmap * 255).astype(np.uint8), mask, truth)
    verdict = "" if truth is None else (
        f"**Labelled {display_name(truth)} in the dataset**: the model says {display_name(pred.label)}, "
        + ("right.\n\n" if truth == pred.label else "**wrong**.\n\n"))
    synthetic = " (synthetic model)" if clf.checkpoint.synthetic else ""
    caption = (f"{verdict}Grad-CAM for **{display_name(pred.target)}**{synthetic}. "
               f"{coarseness(clf.checkpoint.image_size)}\n\n{focus_words(pred.heatmap, mask)}")
    probs = {display_name(k): v for k, v in pred.probabilities.items()}
    return Classified(probs, draw(session, alpha), image, caption, session, tuple(clf.classes))


def explain_again(ctx: AppContext, session: Session, checkpoint: str, target: str, alpha: float) -> Classified:
    """The X-ray of `session` classified and explained again (another model, or another class), its label kept."""
    from PIL import Image

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
    from PIL import Image

    path = mask_path(file)
    if path is None:
        return None
    try:
        with Image.open(path) as m:
            return np.asarray(m.convert("L").resize(size, Image.Resampling.NEAREST)) > 127
    except OSError:
        return None
