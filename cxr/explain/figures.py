"""Figures for reports and the app, drawn with `Figure`, never pyplot (nothing global, so threads may draw at once).

`curves_figure` plots loss and accuracy against step (live in the Train tab, saved in the report);
`confusion_figure` is the confusion matrix every screen shows (rows the true class, columns the predicted one,
class display names, the count in each cell); `cam_overlays` draws the Grad-CAM of the class the model chose over
some images of an `Interpretation`, as uint8 RGB arrays the app can show as they are, and `top_losses_figure` lays
those out as one sheet; `attention_figure` is the grid of fixed images' Grad-CAM at steps through training. Given
the model's settings, each map of a run that hid the lungs shows the picture as the run saw it, the hidden region
outlined, under one sentence (`cxr.explain.hidden`). The report (`cxr.explain.report`) saves them as PNGs; the app
shows them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from cxr.data.index import DatasetIndex, display_name
from cxr.data.cache import ImageCache
from cxr.data.lungs import HideLungs, hide_pixels, mask_path, read_mask
from cxr.explain.hidden import Hidden, draw_map, hidden_region
from cxr.explain.maps import gradcam
from cxr.data.images import read_xray
from cxr.explain.interpret import Interpretation, Record
from cxr.data.transforms import prepare_image, to_model_input

TOP_LOSSES_SHOWN = 8  # images on the report's top-losses sheet (and rows in its table)
ATTENTION_COLUMNS = 6  # steps shown per image: enough to see attention move, few enough to stay legible
CAM_ALPHA = 0.45  # overlay opacity: the X-ray stays readable under the colour


SMOOTHING = 0.6  # weight of the past in the smoothed validation curve (90 images make a jumpy line)
SMOOTH_FROM = 5  # evaluations before the smoothed line shows: over fewer, the average lags far behind the points
CURVE_COLORS = {"training": "#4c78a8", "validation": "#f58518", "smoothed": "#b3541e", "target": "#888888",
                "compare": "#54a24b"}


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """An exponential moving average (as TensorBoard draws): the trend under a noisy 90-image curve."""
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def _points(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(h["step"], h[key]) for h in history if h.get(key) is not None]  # old checkpoints may lack a metric
    return [s for s, _ in pairs], [v for _, v in pairs]


def curves_figure(history: list[dict[str, Any]], total_steps: int = 0, target: float = 0.0,
                  compare: tuple[str, list[dict[str, Any]]] | None = None) -> Figure:
    """Loss and accuracy against step, training beside validation, as the Train tab shows them live and the report
    saves them: every evaluation a marker (so one point shows), a smoothed validation line from SMOOTH_FROM on,
    the target as a dotted line (0: none), and optionally another run's validation accuracy, `(name, history)`.
    `total_steps` fixes the x range a run will fill (0: the steps so far); a compared run widens it to its own."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2, sharex=True)
    style = dict(marker="o", markersize=4, linewidth=1.6)
    for ax, metric, title in ((ax_loss, "loss", "Loss"), (ax_acc, "accuracy", "Accuracy")):
        for part, label in (("train", "training"), ("val", "validation")):
            ax.plot(*_points(history, f"{part}_{metric}"), color=CURVE_COLORS[label], label=f"{label} {metric}",
                    **style)
        steps, values = _points(history, f"val_{metric}")
        if len(values) >= SMOOTH_FROM:
            ax.plot(steps, smooth(values), color=CURVE_COLORS["smoothed"], linewidth=2.4, linestyle="--",
                    label=f"validation {metric}, smoothed")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
    if compare is not None:
        name, other = compare
        ax_acc.plot(*_points(other, "val_accuracy"), color=CURVE_COLORS["compare"],
                    label=f"validation accuracy: {name}", **style)
    if target:
        ax_acc.axhline(target, color=CURVE_COLORS["target"], linestyle=":", label=f"target {target:.0%}")
    ax_acc.set_ylim(0, 1.02)
    ax_loss.set_ylim(bottom=0)
    shown = history + (compare[1] if compare is not None else [])
    last = max((h["step"] for h in shown), default=0)
    ax_loss.set_xlim(0, max(total_steps, last, 1) * 1.02)  # a little room so the last marker is not cut in half
    if not history:
        ax_loss.set_ylim(0, 1.5)  # no loss yet: a sensible empty scale (a 3-class guess scores ln 3 = 1.1)
        for ax in (ax_loss, ax_acc):
            ax.text(0.5, 0.5, "no evaluation yet", transform=ax.transAxes, ha="center", va="center", color="#666")
    ax_loss.legend(loc="upper right", fontsize=8)
    ax_acc.legend(loc="lower left", fontsize=8)
    return fig


def confusion_figure(report: dict[str, Any], title: str = "Test set confusion matrix") -> Figure:
    """The confusion matrix of a `classification_report` dict: rows the true class, columns the predicted one,
    labelled with the classes' display names, the count written in each cell."""
    names = [display_name(k) for k in report["classes"]]
    cm = np.array(report["confusion_matrix"], dtype=np.int64).reshape(len(names), len(names))
    fig = Figure(figsize=(4.8, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues", vmin=0)
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black", fontsize=12)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def cam_overlays(
    model: torch.nn.Module,
    cache: ImageCache,
    interp: Interpretation,
    records: Sequence[Record],
    size: int | None = None,
    alpha: float = CAM_ALPHA,
    config: dict[str, Any] | None = None,
) -> list[np.ndarray]:
    """Each record's image (from `cache`, at the model's resolution) with the Grad-CAM of the class the model
    chose, as uint8 RGB [size, size, 3] (`size` None: the cache's own). One batched Grad-CAM for all of them.
    `config`, the model's settings: a run that hid the lungs is explained on its images as it saw them, and each
    picture shows the hidden region (`cxr.explain.hidden`)."""
    return [picture for picture, _ in _cam_pictures(model, cache, interp, records, size, alpha, config or {})]


def _cam_pictures(model: torch.nn.Module, cache: ImageCache, interp: Interpretation, records: Sequence[Record],
                  size: int | None, alpha: float, config: dict[str, Any]) -> list[tuple[np.ndarray, Hidden]]:
    if not records:
        return []
    images, ok = cache.get([interp.ids[r.row] for r in records])  # all cached and readable: interpret kept only those
    hide = HideLungs.from_config(config)
    masks = _masks(cache, ok) if hide.needs_masks else None
    seen = hide_pixels(images, hide, masks) if hide.mode == "box" or masks is not None else images
    x = to_model_input(seen.to(next(model.parameters()).device))
    heat, _ = gradcam(model, x, target=[interp.classes.index(r.predicted) for r in records])
    out = []
    for k, (image, h) in enumerate(zip(images, heat)):
        gray = image[0].cpu().numpy()
        if size is not None and gray.shape != (size, size):
            gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))
        hidden = hidden_region(config, gray.shape, None if masks is None else masks[k])
        out.append((draw_map(gray, h, alpha, hidden), hidden))  # the map is scaled to the picture, not the reverse
    return out


def _masks(cache: ImageCache, ids: Sequence[int]) -> torch.Tensor | None:
    """The lung masks of `ids`, or None when the cache keeps none or one is missing (then nothing is outlined)."""
    try:
        return cache.get_masks(ids)
    except ValueError:
        return None


def hidden_title(fig: Figure, hidden: Sequence[Hidden]) -> None:
    """Above a sheet of maps of a model that hid the lungs, the sentence that says what its pictures show."""
    sentences = list(dict.fromkeys(h.sentence for h in hidden if h.sentence))
    if sentences:
        fig.suptitle("\n".join(sentences), fontsize=9, color="#7a0f7a", wrap=True)


def true_probability(record: Record) -> float:
    """The probability the model gave an image's true class. The loss is its -log, so this is what orders the top
    losses; the app's Evaluate tab, the report's sheet and its table all show this number."""
    return math.exp(-record.loss)


def share_text(p: float) -> str:
    """A probability as a whole percent, never rounded to a certainty it is not ("<1 %", ">99 %")."""
    return "<1 %" if p < 0.005 else ">99 %" if p >= 0.995 else f"{100 * p:.0f} %"


def top_losses_figure(
    model: torch.nn.Module, cache: ImageCache, interp: Interpretation, n: int = TOP_LOSSES_SHOWN,
    config: dict[str, Any] | None = None,
) -> Figure:
    """The `n` most confidently wrong images, each with the Grad-CAM of the class the model chose (`config`: the
    model's settings, see `cam_overlays`), and in brackets the probability it gave the true class."""
    records = interp.top_losses(n)
    cols, rows = min(4, len(records)), math.ceil(len(records) / 4)
    fig = Figure(figsize=(3 * cols, 3.5 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    pictures = _cam_pictures(model, cache, interp, records, None, CAM_ALPHA, config or {})
    for ax, rec, (shown, _) in zip(axes, records, pictures):
        ax.imshow(shown)
        ax.set_title(f"true {display_name(rec.true)} ({share_text(true_probability(rec))})\n"
                     f"called {display_name(rec.predicted)}, loss {rec.loss:.2f}\n{Path(rec.file).name}", fontsize=8)
    hidden_title(fig, [h for _, h in pictures])
    return fig


def _read_attention(attention: Any) -> tuple[list[str], list[str], list[int], np.ndarray]:
    try:
        files, classes = list(attention["files"]), list(attention["classes"])
        steps, maps = [int(s) for s in attention["steps"]], np.asarray(attention["maps"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"the attention record cannot be read ({type(e).__name__}: {e})") from e
    if not steps or maps.ndim != 4 or maps.shape[:2] != (len(steps), len(files)) or len(classes) != len(files):
        raise ValueError(f"the attention record's maps have shape {maps.shape}, not [steps, images, h, w]")
    return files, classes, steps, maps


def attention_figure(attention: dict[str, Any], index: DatasetIndex, image_size: int,
                     config: dict[str, Any] | None = None) -> Figure:
    """Rows: the tracked images; columns: up to ATTENTION_COLUMNS steps, evenly spread, always with the last.
    `config`, the run's settings: a run that hid the lungs shows each image as it saw it (`cxr.explain.hidden`)."""
    files, classes, steps, maps = _read_attention(attention)
    cols = sorted({int(round(c)) for c in np.linspace(0, len(steps) - 1, min(len(steps), ATTENTION_COLUMNS))})
    fig = Figure(figsize=(2.1 * len(cols) + 0.6, 2.2 * len(files)), layout="constrained")
    axes = np.array(fig.subplots(len(files), len(cols), squeeze=False))
    hiddens = []
    for r, (file, key) in enumerate(zip(files, classes)):
        path = index.root / file
        # A missing image still shows its maps, over gray: the picture of attention moving is not lost.
        blank = np.full((image_size, image_size), 128, np.uint8)
        image = prepare_image(read_xray(path), image_size)[0].numpy() if path.is_file() else blank
        hidden = hidden_region(config or {}, image.shape, _file_mask(path, image_size, config or {}))
        hiddens.append(hidden)
        for c, s in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(draw_map(image, maps[s, r], 0.5, hidden))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {steps[s]}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{display_name(key)}\n{Path(file).name}", fontsize=8)
    hidden_title(fig, hiddens)
    return fig


def _file_mask(path: Path, size: int, config: dict[str, Any]) -> torch.Tensor | None:
    """The lung mask beside an image file, for a run that hid the lungs by mask (None: not needed, or none)."""
    found = mask_path(path) if HideLungs.from_config(config).needs_masks else None
    try:
        return read_mask(found, size) if found is not None else None
    except ValueError:
        return None
