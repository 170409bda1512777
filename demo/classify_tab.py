"""Classify tab: drop in an X-ray, get class probabilities and a Grad-CAM overlay from a chosen model (its "Model
files" drawer, to download a model or add one, is `demo.model_files`).

The list of models is refreshed by the page-level timer, whichever tab is open; a visitor's own choice is never
reset by it. A new visitor starts on the best finished model. Uploaded X-rays are deleted a minute after they
are read (the decoded image stays in the visitor's session for re-explaining).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import gradio as gr
import numpy as np
from matplotlib import colormaps

from cxr.data.index import display_name
from cxr.explain.maps import OVERLAY_COLORMAP, draw_outline, overlay
from cxr.data.lungs import area_share, lung_focus, mask_path
from cxr.data.images import IMAGE_SUFFIXES

from . import explain_panel, model_files
from .inference import CLASSIFY_AT_ONCE, predict_batched
from .context import AppContext
from .labels import percent
from .limits import forget_upload
from .messages import SOMETHING_WRONG, not_yet, user_error

log = logging.getLogger(__name__)

INTRO = """
**What Grad-CAM shows.** The coloured overlay marks the regions whose features pushed the model towards the class
you pick: it shows *where the model looked*, not *what is medically there*. A heatmap on a lung opacity is
reassuring; a heatmap on a text marker, the shoulder or the image border means the model learned a shortcut.
Probabilities are the model's confidence, not the chance of disease.
"""
PREDICTED = "predicted class"
NOTHING_CLASSIFIED = ("**Nothing classified.** The red message says why. Drop an X-ray image (PNG, JPEG or DICOM), or "
                      "click one of the examples below.")
WAITING = ("**Waiting for the first model.** Your X-ray stays in the box and is classified as soon as the model is "
           "ready: the line at the top of this tab says when.")
NOTHING_EXPLAINED = "**Nothing explained.** The red message says why. Choose another model or class for the same X-ray."
EXAMPLES_PER_CLASS = 4
MAX_XRAY_MB = 20  # an X-ray PNG is 0.1 to 5 MB, a DICOM up to ~20 MB (the page allows larger files for models)


def coarseness(image_size: int) -> str:
    """The Grad-CAM grid of this model, from its input size: ResNet18's last block sees the image at 1/32, each of
    its five halvings rounding up (112 px -> 56, 28, 14, 7, 4)."""
    cells = max(math.ceil(image_size / 32), 1)
    return (f"The map is coarse: {cells} x {cells} cells at this model's {image_size} px input, each cell covering "
            f"about {100 // cells} % of the width.")


def colour_bar(stops: int = 11) -> str:
    """The overlay's colour scale as HTML: a bar the width of the overlay, low attribution (left) to high (right),
    its gradient sampled from the same colormap the overlay uses."""
    ramp = colormaps[OVERLAY_COLORMAP](np.linspace(0, 1, stops)) * 255
    colours = ", ".join(f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b, _ in ramp)
    return (f"<div role='img' aria-label='colour scale: blue is low attribution, red is high' "
            f"style='height:14px;border-radius:3px;background:linear-gradient(to right, {colours})'></div>"
            "<div style='display:flex;justify-content:space-between;font-size:0.85em'>"
            "<span>low attribution</span><span>high attribution</span></div>")


# ------------------------------------------------------------------------------------------------ models
def starter_message(ctx: AppContext) -> str:
    """What a visitor reads while no model exists yet: the starter run's progress, or how to train one."""
    return ctx.no_model_yet()


def model_list(ctx: AppContext, known: list, current: str | None):
    """Page timer and page load: every model dropdown's choices when the folder changed, and the no-model message.
    Returns (this tab's dropdown, the choices now known, the message, the Train tab's compare list, the Evaluate
    tab's dropdown). A visitor's choice stays; `current` None (a new page) picks the default model."""
    models = ctx.models()
    choices = [(m.label, m.name) for m in models]
    hint = gr.update(value=starter_message(ctx), visible=not models)
    if choices == [tuple(c) for c in known or []] and current is not None:
        return gr.skip(), known, hint, gr.skip(), gr.skip()
    names = [m.name for m in models]
    value = current if current in names else ctx.default_model(models)
    others = gr.update(choices=choices)
    return (gr.update(choices=choices, value=value), choices, hint, others,
            gr.update(choices=choices, value=value) if current is None else others)


# ------------------------------------------------------------------------------------------------ classify
def _size_check(file: str) -> None:
    try:
        size = os.path.getsize(file)
    except OSError:
        raise ValueError(f"{Path(file).name} is no longer on the server (uploads are kept a few minutes): drop it again") from None
    if size > MAX_XRAY_MB * 2**20:
        raise ValueError(f"{Path(file).name} is {size / 2**20:.0f} MB; X-rays of at most {MAX_XRAY_MB} MB are accepted")


def _draw(image: np.ndarray, heat: np.ndarray, alpha: float, mask: np.ndarray | None) -> np.ndarray:
    shown = overlay(image, heat / 255.0, alpha)
    return draw_outline(shown, mask) if mask is not None else shown


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


def classify(ctx: AppContext, file: str | None, checkpoint: str | None, target: str, alpha: float, source=None,
             mask: np.ndarray | None = None, truth: str | None = None):
    """Probabilities, the overlay, the caption, and what re-explaining needs (the decoded image, the heatmap, and
    the lung mask when the image comes from the dataset and has one). `truth`: the dataset's label for an image
    from the dataset, which the caption sets beside the model's answer."""
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
    heat = np.round(pred.heatmap * 255).astype(np.uint8)  # kept per visitor for redrawing: 8 bits are plenty
    if mask is not None and mask.shape != image.shape:
        mask = None  # not this picture's mask
    probs = {display_name(k): v for k, v in pred.probabilities.items()}
    verdict = "" if truth is None else (
        f"**Labelled {display_name(truth)} in the dataset**: the model says {display_name(pred.label)}, "
        + ("right.\n\n" if truth == pred.label else "**wrong**.\n\n"))
    synthetic = " (synthetic model)" if clf.checkpoint.synthetic else ""
    caption = (f"{verdict}Grad-CAM for **{display_name(pred.target)}**{synthetic}. "
               f"{coarseness(clf.checkpoint.image_size)}\n\n{focus_words(pred.heatmap, mask)}")
    targets = gr.update(choices=[PREDICTED] + [(display_name(k), k) for k in clf.classes])
    return probs, _draw(image, heat, alpha, mask), image, caption, (image, heat, mask, truth), targets


def cleared():
    """After a refused image: empty panels under one sentence, not the last image's result beside a new file's name."""
    return (None, None, None, NOTHING_CLASSIFIED, None, gr.update())


def refused_upload(checkpoint: str | None):
    """`cleared`, and whether the upload now waits for the first model: the page had none to choose (then the
    caption says so, not "refused", and `classify_waiting` runs when one lands)."""
    if checkpoint:
        return (*cleared(), False)
    return (None, None, None, WAITING, None, gr.update(), True)


def classify_waiting(ctx: AppContext, waiting: bool, file: str | None, checkpoint: str | None, target: str,
                     alpha: float):
    """The model list changed: an X-ray dropped before there was any model is classified with the first one, and
    the upload box empties (as after any classification). Nothing at all otherwise, the upload box included."""
    if not (waiting and file and checkpoint):
        return (gr.skip(),) * 8
    return (*classify(ctx, file, checkpoint, target, alpha), False, None)  # as `ready_for_next`: nothing waits


def cleared_not_waiting():
    return (*cleared(), False)


def ready_for_next() -> tuple[None, bool]:
    """After a classification: the upload box empties for the next drop (the X-ray shows beside the map, and the
    uploaded file itself is deleted a minute after it was read), and nothing waits for a model any more."""
    return None, False


def unexplained():
    """After a refused re-explanation (a model gone from the folder, another class): the X-ray stays for another try."""
    return (None, None, gr.skip(), NOTHING_EXPLAINED, gr.skip(), gr.update())


def reexplain(ctx: AppContext, state, checkpoint: str | None, target: str, alpha: float):
    """A new model or class to explain for the image already in this session; nothing at all before an image
    was dropped (opening a dropdown is not an error)."""
    if not state or not checkpoint:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    from PIL import Image

    image, _, mask = _unpack(state)
    truth = state[3] if len(state) > 3 and isinstance(state[3], str) else None  # the dataset's label, if any
    return classify(ctx, None, checkpoint, target, alpha, source=Image.fromarray(image), mask=mask, truth=truth)


def _unpack(state) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image, heat, *rest = state
    mask = rest[0] if rest and rest[0] is not None else None
    return (np.asarray(image, dtype=np.uint8), np.asarray(heat, dtype=np.float32),
            np.asarray(mask, dtype=bool) if mask is not None else None)


def reblend(state, alpha: float):
    """Redraw the overlay at a new opacity without running the model again."""
    if not state:
        return gr.skip()
    image, heat, mask = _unpack(state)
    return _draw(image, heat, alpha, mask)


def example_ids(ctx: AppContext, checkpoint: str | None = None) -> list[int]:
    """A few test images of each class, from the chosen model's own split: images it never trained on."""
    split = ctx.split
    if checkpoint:
        try:
            split = ctx.split_for(checkpoint)
        except ValueError:
            pass
    index, out = ctx.index, []
    for label in range(len(index.classes)):
        out += [i for i in split.test if index.labels[i] == label][:EXAMPLES_PER_CLASS]
    return out


def example_gallery(ctx: AppContext, checkpoint: str | None = None) -> list:
    """Thumbnails (pixels, not server paths: the dataset folder itself is never served)."""
    images, ok = ctx.sample_cache.get(example_ids(ctx, checkpoint))  # captions: the class alone, to fit at 1024 px
    return [(img[0].numpy(), display_name(ctx.index.classes[ctx.index.labels[i]])) for img, i in zip(images, ok)]


def examples_for(ctx: AppContext, checkpoint: str | None):
    """The examples of the chosen model's test set; none shown before there is a model (whose test set?)."""
    return gr.update(value=example_gallery(ctx, checkpoint), visible=bool(checkpoint))


def classify_id(ctx: AppContext, i: int, checkpoint: str | None, target: str, alpha: float):
    """Classify the dataset image with index `i` (an example here, or a top loss opened from Evaluate)."""
    if not isinstance(i, int) or not 0 <= i < len(ctx.index.files):
        raise user_error("That example is no longer available.")
    image = _read_dataset_image(ctx, i)
    return classify(ctx, None, checkpoint, target, alpha, source=image,
                    mask=_dataset_mask(ctx.index.files[i], image.size), truth=ctx.index.classes[ctx.index.labels[i]])


def open_from_evaluate(ctx: AppContext, i: int | None, checkpoint: str | None, target: str, alpha: float):
    """An image clicked in Evaluate: the same model chosen here, and the image classified with it."""
    if i is None:
        return (gr.skip(),) * 7
    return (gr.update(value=checkpoint), *classify_id(ctx, i, checkpoint, target, alpha))


def _dataset_mask(file, size: tuple[int, int]) -> np.ndarray | None:
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


def _read_dataset_image(ctx: AppContext, i: int):
    from cxr.data.images import read_xray
    from cxr.predict import DISPLAY_SIDE

    try:
        return read_xray(ctx.index.files[i], max_side=DISPLAY_SIDE)
    except ValueError as e:
        raise user_error(str(e)) from None


def classify_example(ctx: AppContext, checkpoint: str | None, target: str, alpha: float, evt: gr.SelectData):
    ids = [i for i in example_ids(ctx, checkpoint) if i not in ctx.sample_cache.bad]
    if not 0 <= evt.index < len(ids):
        raise user_error("That example is no longer available.")
    return classify_id(ctx, ids[evt.index], checkpoint, target, alpha)


def build(ctx: AppContext) -> dict[str, gr.components.Component]:
    gr.Markdown(INTRO)
    models = ctx.models()
    hint = gr.Markdown(starter_message(ctx), visible=not models, elem_id="no_checkpoint")
    choices, default = [(m.label, m.name) for m in models], ctx.default_model(models)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            # allow_custom_value: the list grows while the server runs, and the API checks a value against the list
            # of when the page was built; the handler accepts only names of files in the checkpoints folder.
            checkpoint = gr.Dropdown(choices, value=default, label="Model", elem_id="checkpoint", allow_custom_value=True)
            upload = gr.File(label="Drop an X-ray here (PNG, JPEG or DICOM)", file_types=list(IMAGE_SUFFIXES),
                             type="filepath", elem_id="upload", height=120)
            original = gr.Image(label="Your X-ray", type="numpy", elem_id="original", height=200, interactive=False,
                                buttons=[])
            target = gr.Dropdown([PREDICTED], value=PREDICTED, label="Explain which class", elem_id="target",
                                 allow_custom_value=True)  # the model's classes arrive with it; the handler checks
            alpha = gr.Slider(0, 1, 0.45, step=0.05, label="Overlay opacity", elem_id="alpha")
        with gr.Column(scale=3, min_width=360):
            probs = gr.Label(label="Class probabilities", elem_id="probs", num_top_classes=4)
            shown = gr.Image(type="numpy", elem_id="overlay", height=360, interactive=False, show_label=False,
                             buttons=["download"])
            gr.HTML(colour_bar(), elem_id="colour_bar", container=False)
            caption = gr.Markdown(elem_id="cam_caption")
    synthetic = " (synthetic X-rays)" if ctx.settings.synthetic else ""
    examples = gr.Gallery(example_gallery(ctx, default),
                          label=f"Examples from this model's test set: click one to classify it{synthetic}",
                          columns=6, height="auto", allow_preview=False, elem_id="examples", visible=bool(default))
    download_btn, add_file, add_status = model_files.build(ctx, default)
    state = gr.State(None, time_to_live=1800)  # the last image and heatmap, for redrawing and re-explaining
    known = gr.State(choices)
    explain_panel.build(ctx, state, checkpoint, alpha)

    outputs = [probs, shown, original, caption, state, target]
    waiting = gr.State(False)  # an X-ray dropped before the first model, to classify when it arrives
    # After a refusal the toast says why; the panels empty instead of each showing "Error" (see `cleared`). After a
    # classification the upload box empties for the next drop.
    dropped = upload.upload(ctx.bind(classify), [upload, checkpoint, target, alpha], outputs, api_name="classify",
                            concurrency_limit=CLASSIFY_AT_ONCE, concurrency_id="classify")
    dropped.success(ready_for_next, None, [upload, waiting], api_name=False)
    # Refused for want of a model: wait for one, or take the one that landed meanwhile.
    waiting_in, waiting_out = [waiting, upload, checkpoint, target, alpha], [*outputs, waiting, upload]
    dropped.failure(refused_upload, [checkpoint], [*outputs, waiting], api_name=False).then(
        ctx.bind(classify_waiting), waiting_in, waiting_out, api_name=False)
    upload.clear(lambda: False, None, [waiting], api_name=False)
    # Every change of the model list runs this (page load, the timer, a pick): outside the classify queue and with
    # no progress overlay, since it nearly always does nothing. (Not a .success(ready_for_next) either: it must not
    # empty the box when it did nothing.)
    checkpoint.change(ctx.bind(classify_waiting), waiting_in, waiting_out, api_name=False, concurrency_limit=None,
                      show_progress="hidden").failure(cleared_not_waiting, None, [*outputs, waiting], api_name=False)
    for trigger in (target.input, checkpoint.input):
        trigger(ctx.bind(reexplain), [state, checkpoint, target, alpha], outputs, api_name=False,
                concurrency_limit=CLASSIFY_AT_ONCE, concurrency_id="classify").failure(unexplained, None, outputs, api_name=False)
    checkpoint.change(ctx.bind(examples_for), [checkpoint], [examples], api_name=False)
    picked = examples.select(ctx.bind(classify_example), [checkpoint, target, alpha], outputs, api_name=False,
                             concurrency_limit=CLASSIFY_AT_ONCE, concurrency_id="classify")
    picked.success(ready_for_next, None, [upload, waiting], api_name=False)
    picked.failure(cleared, None, outputs, api_name=False)
    alpha.change(reblend, [state, alpha], [shown], api_name=False, show_progress="hidden")
    checkpoint.change(ctx.bind(model_files.download_model), [checkpoint], [download_btn], api_name=False,
                      show_progress="hidden")
    return {"checkpoint": checkpoint, "known": known, "hint": hint, "outputs": outputs, "target": target,
            "upload": upload, "waiting": waiting, "alpha": alpha, "add_file": add_file, "add_status": add_status,
            "download_btn": download_btn}
