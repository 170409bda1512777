"""Classify tab: drop in an X-ray, get class probabilities and a Grad-CAM overlay from a chosen checkpoint."""

from __future__ import annotations

import logging

import gradio as gr
import numpy as np

from cxr.data import display_name
from cxr.explain import overlay
from cxr.images import IMAGE_SUFFIXES

from .context import AppContext

log = logging.getLogger(__name__)

INTRO = """
**What Grad-CAM shows.** The coloured overlay marks the regions whose features pushed the model towards the class
you pick: it shows *where the model looked*, not *what is medically there*. A heatmap on a lung opacity is
reassuring; a heatmap on a text marker, the shoulder or the image border means the model learned a shortcut.
The map is coarse (7 x 7 cells at 224 px). Probabilities are the model's confidence, not the chance of disease.
"""
NO_CHECKPOINT = ("**No trained model yet.** Train one in the **Train** tab (the Fast preset takes a few minutes); "
                 "it appears here as soon as its first evaluation is saved.")
PREDICTED = "predicted class"
EXAMPLES_PER_CLASS = 4


def refresh_checkpoints(ctx: AppContext, known: list[str], current: str | None):
    """Timer tick: update the checkpoint list only when the folder changed, so an open dropdown is not reset."""
    names = ctx.checkpoint_names()
    if names == known:
        return gr.skip(), known, gr.skip()
    value = current if current in names else (names[0] if names else None)
    hint = gr.update(visible=not names)
    return gr.update(choices=names, value=value), names, hint


def classify(ctx: AppContext, file: str | None, checkpoint: str | None, target: str, alpha: float):
    """Probabilities, the overlay, and what the overlay sliders need (image and heatmap) for this session."""
    if not file:
        raise gr.Error("Drop an X-ray image (PNG, JPEG or DICOM) into the box first.")
    if not checkpoint:
        raise gr.Error("There is no trained model yet: train one in the Train tab first.")
    try:
        clf = ctx.classifier(checkpoint)
        if target not in (None, PREDICTED, *clf.classes):
            raise ValueError(f"this model cannot explain '{target}'; choose one of its classes")
        pred = clf.predict(file, explain=True, target=None if target in (None, PREDICTED) else target)
    except ValueError as e:
        raise gr.Error(str(e)) from None
    except Exception:  # a bug, not the user's file: log it here, tell them plainly, keep serving
        log.exception("classify failed")
        raise gr.Error("Something went wrong while classifying this image. Please try another one.") from None
    image = np.asarray(pred.image)
    heat = np.round(pred.heatmap * 255).astype(np.uint8)  # kept per visitor for the slider: 8 bits are plenty
    probs = {display_name(k): v for k, v in pred.probabilities.items()}
    shown = overlay(image, heat / 255.0, alpha)
    caption = f"Grad-CAM for **{display_name(pred.target)}**" + (" (synthetic model)" if clf.checkpoint.synthetic else "")
    targets = gr.update(choices=[PREDICTED] + [(display_name(k), k) for k in clf.classes])
    return probs, shown, caption, (image, heat), targets


def reblend(state, alpha: float):
    """Redraw the overlay at a new opacity without running the model again."""
    if not state:
        return gr.skip()
    image, heat = state
    return overlay(np.asarray(image, dtype=np.uint8), np.asarray(heat, dtype=np.float32) / 255.0, alpha)


def example_ids(ctx: AppContext) -> list[int]:
    """A few test-split images of each class: never trained on with the default split."""
    index, out = ctx.index, []
    for label in range(len(index.classes)):
        out += [i for i in ctx.split.test if index.labels[i] == label][:EXAMPLES_PER_CLASS]
    return out


def example_gallery(ctx: AppContext) -> list:
    """Thumbnails (pixels, not server paths: the dataset folder itself is never served)."""
    images, ok = ctx.sample_cache.get(example_ids(ctx))
    tag = " (synthetic)" if ctx.settings.synthetic else ""
    return [(img[0].numpy(), display_name(ctx.index.classes[ctx.index.labels[i]]) + tag) for img, i in zip(images, ok)]


def classify_example(ctx: AppContext, checkpoint: str | None, target: str, alpha: float, evt: gr.SelectData):
    ids = [i for i in example_ids(ctx) if i not in ctx.sample_cache.bad]
    if not 0 <= evt.index < len(ids):
        raise gr.Error("That example is no longer available.")
    return classify(ctx, str(ctx.index.files[ids[evt.index]]), checkpoint, target, alpha)


def build(ctx: AppContext) -> dict[str, gr.components.Component]:
    gr.Markdown(INTRO)
    names = ctx.checkpoint_names()
    hint = gr.Markdown(NO_CHECKPOINT, visible=not names, elem_id="no_checkpoint")
    with gr.Row():
        with gr.Column(scale=1):
            # allow_custom_value: the list grows while the server runs (API callers may name a new file); the
            # handler accepts only names of files in the checkpoints folder.
            checkpoint = gr.Dropdown(names, value=names[0] if names else None, label="Model (checkpoint)",
                                     elem_id="checkpoint", allow_custom_value=True)
            upload = gr.File(label="Drop an X-ray here (PNG, JPEG or DICOM)", file_types=list(IMAGE_SUFFIXES),
                             type="filepath", elem_id="upload", height=140)
            target = gr.Dropdown([PREDICTED], value=PREDICTED, label="Explain which class", elem_id="target",
                                 allow_custom_value=True)
            alpha = gr.Slider(0, 1, 0.45, step=0.05, label="Overlay opacity", elem_id="alpha")
            probs = gr.Label(label="Class probabilities", elem_id="probs")
        with gr.Column(scale=1):
            shown = gr.Image(label="Grad-CAM overlay", type="numpy", elem_id="overlay", height=420, interactive=False)
            caption = gr.Markdown(elem_id="cam_caption")
    examples = gr.Gallery(example_gallery(ctx), label="Examples from the test set: click one to classify it",
                          columns=6, height=200, allow_preview=False, elem_id="examples")
    state = gr.State(None, time_to_live=1800)  # the last image and heatmap, for redrawing at a new opacity
    known = gr.State(names)

    outputs = [probs, shown, caption, state, target]
    run = {"fn": ctx.bind(classify), "inputs": [upload, checkpoint, target, alpha], "outputs": outputs,
           "concurrency_limit": 2, "concurrency_id": "classify"}
    upload.upload(**run, api_name="classify")
    target.input(**run, api_name=False)
    checkpoint.input(**run, api_name=False)
    examples.select(ctx.bind(classify_example), [checkpoint, target, alpha], outputs, api_name=False,
                    concurrency_limit=2, concurrency_id="classify")
    alpha.release(reblend, [state, alpha], [shown], api_name=False)
    return {"checkpoint": checkpoint, "known": known, "hint": hint}
