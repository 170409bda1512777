"""Classify's "compare explanations" panel: Grad-CAM, Integrated Gradients and Occlusion side by side for the X-ray
on screen, each with its run time, and the same three maps from a copy of the model with random weights (the sanity
check of Adebayo et al., NeurIPS 2018): a method whose map barely changes when the weights are random shows the
picture's edges, not what the model learned.

It is opt-in (a button that says how long it will take, from the model's measured forward time) and runs in its own
queue of one, so it never holds up other visitors' Classify requests.
"""

from __future__ import annotations

import logging
import time

import gradio as gr
import torch

from cxr.data.index import display_name
from cxr.data.lungs import HIDE_MODES
from cxr.explain.hidden import draw_map
from cxr.explain.maps import METHODS, MIN_GRID, estimate_seconds, timed_explain
from cxr.explain.sanity import randomized_copy, sanity_words
from cxr.bench.measure import format_duration

from .classify_image import Session, as_trained
from .context import AppContext
from .labels import METHODS_PANEL
from .messages import SOMETHING_WRONG, user_error

log = logging.getLogger(__name__)

INTRO = f"""
**Do the explanations explain the model?** Three methods answer "where did the evidence come from?" differently:
*Grad-CAM* weighs one layer's feature maps by their gradients (a grid of {MIN_GRID} x {MIN_GRID} cells or finer,
cheap), *Integrated Gradients* adds up pixel gradients
along a path from a black image (fine, noisy), *Occlusion* hides one patch at a time and watches the score drop
(slow, direct). The bottom row asks the same of a copy of this model with **random weights**: a map that looks the
same there shows the shape of the X-ray, not what the model learned (the "sanity check" of Adebayo et al., 2018).
"""


def forward_seconds(ctx: AppContext, name: str) -> float:
    """One batch-1 forward pass of the model, measured once per model and kept (for the time estimates): the
    fastest of three, since a run training beside it (the starter model) can slow any single pass several-fold."""
    def measure() -> float:
        clf = ctx.classifier(name)
        x = torch.zeros(1, 3, clf.checkpoint.image_size, clf.checkpoint.image_size, device=clf.device)
        times = []
        with torch.inference_mode():
            clf.model(x)  # warm-up
            for _ in range(3):
                t0 = time.perf_counter()
                clf.model(x)
                times.append(time.perf_counter() - t0)
        return min(times)

    return ctx.cached(("forward_seconds", name), measure)


def expected_seconds(ctx: AppContext, name: str | None) -> float:
    if not name:
        return 0.0
    forward, size = forward_seconds(ctx, name), ctx.classifier(name).checkpoint.image_size
    return 2 * sum(estimate_seconds(m, forward, size) for m in METHODS)  # trained and randomised model


def button_label(ctx: AppContext, name: str | None) -> gr.Button:
    try:
        seconds = expected_seconds(ctx, name)
    except ValueError:
        seconds = 0.0
    about = f" (about {format_duration(seconds)} on this server)" if seconds else ""
    return gr.Button(f"Compare the explanation methods for this X-ray{about}")


def compare(ctx: AppContext, session: Session | None, name: str | None, alpha: float) -> tuple[list, str]:
    """Six overlays (three methods x trained / random weights) with captions, and a summary of the sanity check."""
    if session is None or not name:
        raise user_error("Drop an X-ray (or click an example) first, then compare the methods.")
    try:
        clf = ctx.classifier(name)
        from PIL import Image

        image = session.image
        x = clf.model_input(as_trained(clf, Image.fromarray(image), session.mask))  # as the X-ray was classified
        random_model = ctx.cached(("randomized", name), lambda: randomized_copy(clf.model, seed=0))
        with torch.inference_mode():  # both models explain the trained model's predicted class
            target = int(clf.model(x).argmax(1))
        pictures, words = [], []
        for key, method in METHODS.items():
            trained, _, t_trained = timed_explain(clf.model, x, key, target)
            randomised, _, t_random = timed_explain(random_model, x, key, target)
            # A run that hid the lungs: each map over the X-ray as it saw it, the hidden region outlined.
            pictures.append((draw_map(image, trained[0], alpha, session.hidden), f"{method.label} · {t_trained:.1f} s"))
            pictures.append((draw_map(image, randomised[0], alpha, session.hidden),
                             f"{method.label}, random weights · {t_random:.1f} s"))
            words.append(f"- **{method.label}**: {sanity_words(trained[0], randomised[0])}")
    except ValueError as e:
        raise user_error(str(e)) from None
    except Exception:
        log.exception("comparing explanations failed")
        raise user_error(SOMETHING_WRONG) from None
    # Trained maps first (top row), random-weights maps below, in the same method order.
    ordered = pictures[0::2] + pictures[1::2]
    head = f"Explaining **{display_name(clf.classes[target])}** (the model's prediction).\n\n"
    if session.hidden is not None and session.hidden.sentence:
        head += f"**{session.hidden.sentence}**\n\n"
    return ordered, head + "\n".join(words)


def open_for_hidden(ctx: AppContext, name: str | None) -> dict:
    """The panel opens by itself when the chosen model hid the lungs (the shortcut lesson sends the class here:
    Grad-CAM alone can paint the black region); otherwise it stays as the visitor left it."""
    try:  # the file's facts, read once and kept by the registry: no model is loaded to decide this
        info = ctx.registry.info(ctx.checkpoint_path(name)) if name else None
    except (ValueError, OSError):  # no such model (any more): the dropdown's own handlers say so
        info = None
    hid = info is not None and info.hide_lungs in HIDE_MODES and info.hide_lungs != "none"
    return gr.update(open=True) if hid else gr.skip()


def build(ctx: AppContext, session: gr.State, checkpoint: gr.Dropdown, alpha: gr.Slider) -> None:
    with gr.Accordion(METHODS_PANEL, open=False, elem_id="explain_panel") as panel:
        gr.Markdown(INTRO)
        compare_btn = button_label(ctx, checkpoint.value)
        compare_btn.elem_id = "compare_methods"
        gallery = gr.Gallery(label="Top: this model · bottom: the same model with random weights", columns=3,
                             height="auto", allow_preview=False, elem_id="methods_gallery")  # both rows in full
        verdict = gr.Markdown(elem_id="methods_verdict")
    checkpoint.change(ctx.bind(button_label), [checkpoint], [compare_btn], api_name=False, show_progress="hidden")
    # No trigger named: on page load (a new page's model may be the lungs-hidden one) and whenever the model changes.
    gr.on(None, ctx.bind(open_for_hidden), [checkpoint], [panel], api_name=False, show_progress="hidden")
    # Its own queue of one: a slow comparison never delays anyone's Classify request (concurrency_id "classify").
    compare_btn.click(ctx.bind(compare), [session, checkpoint, alpha], [gallery, verdict], api_name=False,
                      concurrency_limit=1, concurrency_id="explain_methods")
