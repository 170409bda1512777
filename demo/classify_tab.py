"""Classify tab: drop in an X-ray, get class probabilities and a Grad-CAM overlay from a chosen model (one
classification: `demo.classify_image`; the "Model files" drawer: `demo.model_files`; the methods compared:
`demo.explain_panel`).

The tab's components live in `ClassifyTab`, and each handler returns a dict keyed by them. The list of models is
refreshed by the page-level timer, whichever tab is open; a visitor's own choice is never reset by it. A new
visitor starts on the best finished model. Uploaded X-rays are deleted a minute after they are read (the decoded
image stays in the visitor's `Session` for re-explaining).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr
import numpy as np

from cxr.data.images import IMAGE_SUFFIXES
from cxr.data.index import display_name

from . import explain_panel, model_files
from .classify_image import (PREDICTED, Classified, Session, classify, classify_id, colour_bar, draw,
                             explain_again)
from .context import AppContext
from .messages import user_error
from .inference import CLASSIFY_AT_ONCE

INTRO = """
**What Grad-CAM shows.** The coloured overlay marks the regions whose features pushed the model towards the class
you pick: it shows *where the model looked*, not *what is medically there*. A heatmap on a lung opacity is
reassuring; a heatmap on a text marker, the shoulder or the image border means the model learned a shortcut.
Probabilities are the model's confidence, not the chance of disease.
"""
NOTHING_CLASSIFIED = ("**Nothing classified.** The red message says why. Drop an X-ray image (PNG, JPEG or DICOM), or "
                      "click one of the examples below.")
WAITING = ("**Waiting for the first model.** Your X-ray stays in the box and is classified as soon as the model is "
           "ready: the line at the top of this tab says when.")
NOTHING_EXPLAINED = "**Nothing explained.** The red message says why. Choose another model or class for the same X-ray."
EXAMPLES_PER_CLASS = 4
# The examples lie below the results (at 1440 x 900, scrolled to them, the probabilities are above the window): at
# a click there, in the browser, the probabilities and the overlay come into view unless they are in it already.
SCROLL_TO_RESULT = """() => { const probs = document.getElementById('probs'), map = document.getElementById('overlay');
    const top = probs ? probs.getBoundingClientRect().top : 0, bottom = map ? map.getBoundingClientRect().bottom : 0;
    if (top < 0 || bottom > window.innerHeight) window.scrollTo({top: top + window.scrollY - 12}); }"""


@dataclass
class ClassifyTab:
    """The tab's components, by role."""

    checkpoint: gr.Dropdown
    upload: gr.File
    original: gr.Image
    target: gr.Dropdown
    alpha: gr.Slider
    probs: gr.Label
    overlay: gr.Image
    caption: gr.Markdown
    session: gr.State  # the visitor's `Session` (None before the first X-ray)
    examples: gr.Gallery
    waiting: gr.State  # an X-ray dropped before the first model, to classify when it arrives
    known: gr.State  # the model choices this page shows
    hint: gr.Markdown  # the no-model sentence
    download_btn: gr.DownloadButton
    add_file: gr.File
    add_status: gr.Markdown
    ood_note: gr.Markdown  # beside the probabilities: the image is unlike the training X-rays (hidden otherwise)

    @property
    def panels(self) -> list[gr.components.Component]:
        """What a classification fills, in the public `/classify` API's order (the State is not sent)."""
        return [self.probs, self.overlay, self.original, self.caption, self.session, self.target, self.ood_note]

    def show(self, r: Classified) -> dict:
        # An image unlike the training X-rays keeps its probabilities in view, struck through under the note (the
        # page's CSS): hiding them would hide the lesson that the model answers anything, and confidently.
        return {self.probs: r.probs, self.overlay: r.overlay, self.original: r.image, self.caption: r.caption,
                self.session: r.session, self.ood_note: gr.update(value=r.ood_words, visible=r.unlike_training),
                self.target: gr.update(choices=[PREDICTED] + [(display_name(k), k) for k in r.classes])}


@dataclass
class ModelLists:
    """Every list of models on the page, refreshed together (this tab's, the Train tab's compare, Evaluate's)."""

    checkpoint: gr.Dropdown
    known: gr.State
    hint: gr.Markdown
    compare: gr.Dropdown
    evaluate: gr.Dropdown

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.checkpoint, self.known, self.hint, self.compare, self.evaluate]


def nothing(components: list[gr.components.Component]) -> dict:
    """No change to any of `components` (an empty dict would read as one value, not as "no change")."""
    return {c: gr.skip() for c in components}


# ------------------------------------------------------------------------------------------------ models
def model_list(ctx: AppContext, lists: ModelLists, known: list, current: str | None) -> dict:
    """Page timer and page load: every model dropdown's choices when the folder changed, and the no-model message.
    A visitor's choice stays; `current` None (a new page) picks the default model."""
    models = ctx.models()
    choices = [(m.label, m.name) for m in models]
    out = {**nothing(lists.outputs), lists.known: known,
           lists.hint: gr.update(value=ctx.no_model_yet(), visible=not models)}
    if choices == [tuple(c) for c in known or []] and current is not None:
        return out
    value = current if current in [m.name for m in models] else ctx.default_model(models)
    others = gr.update(choices=choices)
    return {**out, lists.checkpoint: gr.update(choices=choices, value=value), lists.known: choices,
            lists.compare: others, lists.evaluate: gr.update(choices=choices, value=value) if current is None else others}


# ------------------------------------------------------------------------------------------------ classify
def classify_upload(ctx: AppContext, tab: ClassifyTab, file: str | None, checkpoint: str | None, target: str,
                    alpha: float) -> dict:
    """A dropped X-ray (and the public `/classify` API)."""
    return tab.show(classify(ctx, file, checkpoint, target, alpha))


def cleared(tab: ClassifyTab) -> dict:
    """After a refused image: empty panels under one sentence, not the last image's result beside a new file's name."""
    return {tab.probs: None, tab.overlay: None, tab.original: None, tab.caption: NOTHING_CLASSIFIED,
            tab.session: None, tab.target: gr.update(), tab.ood_note: gr.update(value="", visible=False)}


def cleared_not_waiting(tab: ClassifyTab) -> dict:
    return {**cleared(tab), tab.waiting: False}


def refused_upload(tab: ClassifyTab, checkpoint: str | None) -> dict:
    """`cleared`, the refused file gone from the upload box (the red message names it; a student need not clear
    it by hand before the next drop), unless the upload now waits for the first model: the page had none to choose
    (then the caption says so, not "refused", the file stays, and `classify_waiting` runs when one lands)."""
    if checkpoint:
        return {**cleared_not_waiting(tab), tab.upload: None}
    return {**cleared(tab), tab.caption: WAITING, tab.waiting: True, tab.upload: gr.skip()}


def classify_waiting(ctx: AppContext, tab: ClassifyTab, waiting: bool, file: str | None, checkpoint: str | None,
                     target: str, alpha: float) -> dict:
    """The model list changed: an X-ray dropped before there was any model is classified with the first one, and
    the upload box empties (as after any classification). Nothing at all otherwise, the upload box included."""
    if not (waiting and file and checkpoint):
        return nothing([*tab.panels, tab.waiting, tab.upload])
    return {**tab.show(classify(ctx, file, checkpoint, target, alpha)), **ready_for_next(tab)}


def ready_for_next(tab: ClassifyTab) -> dict:
    """After a classification: the upload box empties for the next drop (the X-ray shows beside the map, and the
    uploaded file itself is deleted a minute after it was read), and nothing waits for a model any more."""
    return {tab.upload: None, tab.waiting: False}


def unexplained(tab: ClassifyTab) -> dict:
    """After a refused re-explanation (a model gone from the folder, another class): the X-ray stays for another try."""
    return {**nothing(tab.panels), tab.probs: None, tab.overlay: None, tab.caption: NOTHING_EXPLAINED,
            tab.ood_note: gr.update(value="", visible=False)}


def reexplain(ctx: AppContext, tab: ClassifyTab, session: Session | None, checkpoint: str | None, target: str,
              alpha: float) -> dict:
    """A new model or class to explain for the image already in this session; nothing at all before an image
    was dropped (opening a dropdown is not an error)."""
    if session is None or not checkpoint:
        return nothing(tab.panels)
    return tab.show(explain_again(ctx, session, checkpoint, target, alpha))


def reblend(session: Session | None, alpha: float) -> np.ndarray:
    """Redraw the overlay at a new opacity without running the model again."""
    return gr.skip() if session is None else draw(session, alpha)


# ------------------------------------------------------------------------------------------------ examples
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


def examples_for(ctx: AppContext, checkpoint: str | None) -> dict:
    """The examples of the chosen model's test set; none shown before there is a model (whose test set?)."""
    return gr.update(value=example_gallery(ctx, checkpoint), visible=bool(checkpoint))


def classify_example(ctx: AppContext, tab: ClassifyTab, checkpoint: str | None, target: str, alpha: float,
                     evt: gr.SelectData) -> dict:
    ids = [i for i in example_ids(ctx, checkpoint) if i not in ctx.sample_cache.bad]
    if not 0 <= evt.index < len(ids):
        raise user_error("That example is no longer available.")
    return tab.show(classify_id(ctx, ids[evt.index], checkpoint, target, alpha))


def open_from_evaluate(ctx: AppContext, tab: ClassifyTab, i: int | None, checkpoint: str | None, target: str,
                       alpha: float) -> dict:
    """An image clicked in Evaluate: the same model chosen here, and the image classified with it."""
    if i is None:
        return nothing([tab.checkpoint, *tab.panels])
    return {tab.checkpoint: gr.update(value=checkpoint), **tab.show(classify_id(ctx, i, checkpoint, target, alpha))}


# ------------------------------------------------------------------------------------------------ the tab
def build(ctx: AppContext) -> ClassifyTab:
    gr.Markdown(INTRO)
    models = ctx.models()
    hint = gr.Markdown(ctx.no_model_yet(), visible=not models, elem_id="no_checkpoint")
    choices, default = [(m.label, m.name) for m in models], ctx.default_model(models)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            # allow_custom_value: the list grows while the server runs, and the API checks a value against the list
            # of when the page was built; the handler accepts only names of files in the checkpoints folder.
            checkpoint = gr.Dropdown(choices, value=default, label="Model", elem_id="checkpoint", allow_custom_value=True)
            upload = gr.File(label="Drop an X-ray here (PNG, JPEG or DICOM)", file_types=list(IMAGE_SUFFIXES),
                             type="filepath", elem_id="upload", height=120)
            # JPEG: Gradio encodes every image it returns, and WebP took 10 to 30 ms of a two-core server's CPU per
            # picture (two per request) where JPEG takes 1 to 2 ms: a class of 30 at once is 60 pictures.
            original = gr.Image(label="Your X-ray", type="numpy", elem_id="original", height=200, interactive=False,
                                buttons=[], format="jpeg")
            target = gr.Dropdown([PREDICTED], value=PREDICTED, label="Explain which class", elem_id="target",
                                 allow_custom_value=True)  # the model's classes arrive with it; the handler checks
            alpha = gr.Slider(0, 1, 0.45, step=0.05, label="Overlay opacity", elem_id="alpha")
        with gr.Column(scale=3, min_width=360, elem_id="answer"):
            ood_note = gr.Markdown(visible=False, elem_id="ood_note")
            probs = gr.Label(label="Class probabilities", elem_id="probs", num_top_classes=4)
            shown = gr.Image(type="numpy", elem_id="overlay", height=360, interactive=False, show_label=False,
                             buttons=["download"], format="jpeg")
            gr.HTML(colour_bar(), elem_id="colour_bar", container=False)
            caption = gr.Markdown(elem_id="cam_caption")
    synthetic = " (synthetic X-rays)" if ctx.settings.synthetic else ""
    examples = gr.Gallery(example_gallery(ctx, default),
                          label=f"Examples from this model's test set: click one to classify it{synthetic}",
                          columns=6, height="auto", allow_preview=False, elem_id="examples", visible=bool(default))
    download_btn, add_file, add_status = model_files.build(ctx, default)
    tab = ClassifyTab(checkpoint=checkpoint, upload=upload, original=original, target=target, alpha=alpha,
                      probs=probs, overlay=shown, caption=caption, session=gr.State(None, time_to_live=1800),
                      examples=examples, waiting=gr.State(False), known=gr.State(choices), hint=hint,
                      download_btn=download_btn, add_file=add_file, add_status=add_status, ood_note=ood_note)
    explain_panel.build(ctx, tab.session, checkpoint, alpha)
    _wire(ctx, tab)
    return tab


def _wire(ctx: AppContext, t: ClassifyTab) -> None:
    panels, queue = t.panels, {"concurrency_limit": CLASSIFY_AT_ONCE, "concurrency_id": "classify"}
    # After a refusal the toast says why; the panels empty instead of each showing "Error" (see `cleared`). After a
    # classification the upload box empties for the next drop.
    dropped = t.upload.upload(ctx.bind(classify_upload, t), [t.upload, t.checkpoint, t.target, t.alpha], panels,
                              api_name="classify", **queue)
    dropped.success(partial(ready_for_next, t), None, [t.upload, t.waiting], api_name=False)
    # Refused for want of a model: wait for one, or take the one that landed meanwhile.
    waiting_in, waiting_out = [t.waiting, t.upload, t.checkpoint, t.target, t.alpha], [*panels, t.waiting, t.upload]
    dropped.failure(partial(refused_upload, t), [t.checkpoint], [*panels, t.waiting, t.upload], api_name=False).then(
        ctx.bind(classify_waiting, t), waiting_in, waiting_out, api_name=False)
    t.upload.clear(lambda: False, None, [t.waiting], api_name=False)
    # Every change of the model list runs this (page load, the timer, a pick): outside the classify queue and with
    # no progress overlay, since it nearly always does nothing. (Not a .success(ready_for_next) either: it must not
    # empty the box when it did nothing.)
    t.checkpoint.change(ctx.bind(classify_waiting, t), waiting_in, waiting_out, api_name=False, concurrency_limit=None,
                        show_progress="hidden").failure(partial(cleared_not_waiting, t), None, [*panels, t.waiting],
                                                        api_name=False)
    for trigger in (t.target.input, t.checkpoint.input):
        trigger(ctx.bind(reexplain, t), [t.session, t.checkpoint, t.target, t.alpha], panels, api_name=False,
                **queue).failure(partial(unexplained, t), None, panels, api_name=False)
    t.checkpoint.change(ctx.bind(examples_for), [t.checkpoint], [t.examples], api_name=False)
    picked = t.examples.select(ctx.bind(classify_example, t), [t.checkpoint, t.target, t.alpha], panels,
                               api_name=False, **queue)
    picked.success(partial(ready_for_next, t), None, [t.upload, t.waiting], api_name=False)
    picked.failure(partial(cleared, t), None, panels, api_name=False)
    t.examples.select(None, None, None, js=SCROLL_TO_RESULT, api_name=False)
    t.alpha.change(reblend, [t.session, t.alpha], [t.overlay], api_name=False, show_progress="hidden")
    t.checkpoint.change(ctx.bind(model_files.download_model), [t.checkpoint], [t.download_btn], api_name=False,
                        show_progress="hidden")
