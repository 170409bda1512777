"""Data tab: how many images of each class, how they are split, and what augmentation does to them."""

from __future__ import annotations

import random
import gradio as gr
import pandas as pd
import torch

from cxr.data.index import display_name
from cxr.explain.card import BIASES as REPORT_BIASES
from cxr.data.lungs import HideLungs
from cxr.train.presets import apply_preset, default_preset
from cxr.data.transforms import AugmentConfig, to_display, to_model_input

from .context import AppContext
from .labels import augmentation_choices, augmentation_labels, preset_title
from .messages import user_error

INTRO = """
**What the model learns from.** Each class is a folder of X-rays. A few images of each class are set aside
as a **test set** the model never trains on, and a few more as a **validation set** checked during training;
the rest are for training. **Augmentation** changes each training image a little every time it is used (a small
rotation, zoom, shift, brightness or contrast change, a mirror image), so the model has to learn what pneumonia
looks like rather than memorise particular pictures. The switches below start as training does; switch each one on
and off and compare with the original.
A mirrored chest puts the heart on the wrong side: a reminder that every augmentation is a claim about which
changes should not alter the diagnosis.
"""
# The bias notes are the model card's (cxr.explain.report), so the page and every report say the same.
BIASES = "\n".join(["**Know the data's biases before trusting a score.**", "", *(f"- {b}" for b in REPORT_BIASES), "",
                    "A high accuracy shows that the model found *something* that separates the folders; the "
                    "**Classify** overlay and the \"hide the lungs\" experiment in **Train** show whether that "
                    "something is in the lungs."])
BATCH = 12
VARIANTS = 5
UNCHANGED = "no augmentation: same as the original"  # every switch off: the copies are the original again


def split_counts(ctx: AppContext) -> pd.DataFrame:
    """Images per class in each part of the split, for the bar plot."""
    index, split = ctx.index, ctx.split
    rows = []
    for part, ids in (("train", split.train), ("validation", split.val), ("test", split.test)):
        for label, key in enumerate(index.classes):
            rows.append({"class": display_name(key), "split": part, "images": sum(index.labels[i] == label for i in ids)})
    return pd.DataFrame(rows)


def summary(ctx: AppContext) -> str:
    index, sizes = ctx.index, ctx.split.sizes()
    kind = "synthetic" if ctx.settings.synthetic else f"layout {index.layout}"
    counts = ", ".join(f"{display_name(k)} {v:,}" for k, v in index.counts().items())
    return (f"**{len(index.files):,} images** ({kind}): {counts}. Split: {sizes['train']:,} train, "
            f"{sizes['val']:,} validation, {sizes['test']:,} test.")


def training_preset() -> str:
    """The preset the Train tab starts with on this machine: the browser shows what a run with it is fed."""
    return default_preset(torch.cuda.is_available())


def augment_config(augs: list[str]) -> AugmentConfig:
    """Exactly the switched-on augmentations, at the training preset's strengths (its gentle zoom stays gentle; one
    it leaves off comes on at the default strength), as the Train tab's boxes give them (`AugmentConfig.only`)."""
    return apply_preset(training_preset()).augment.only(augs)


def augment_note(preset: str) -> str:
    """Where the switches' starting values come from, and what they are, in the preset's own numbers."""
    cfg = apply_preset(preset).augment
    labels = augmentation_labels(cfg)
    used = ", ".join(labels[n] for n in cfg.enabled()) or "none"
    return (f"The switches start as the **{preset_title(preset)}** preset trains (the Train tab's first choice): "
            f"{used}.")


HIDE_CHOICES = [("the whole X-ray", "none"), ("lungs hidden: central box", "box"), ("lungs hidden: lung masks", "mask")]


def _augmented(ctx: AppContext, ids: list[int], augs: list[str], seed: int, hide: str = "none") -> tuple[list, list[int]]:
    images, ok = ctx.sample_cache.get(ids)
    if not ok:
        raise user_error("none of these images could be read")
    if hide == "mask" and not ctx.has_masks:
        raise user_error("This dataset has no lung masks (the Kaggle v4 release keeps them in masks/ folders): "
                         "use the central box instead.")
    if hide not in ("none", "box", "mask"):
        raise user_error("choose what the model gets from the list")
    try:
        cfg = augment_config(augs)
    except ValueError as e:  # a name no box has (only an API caller can send one)
        raise user_error(str(e)) from None
    gen = torch.Generator().manual_seed(seed)
    masks = ctx.sample_cache.get_masks(ok) if hide == "mask" else None
    # Exactly what training feeds the model, hiding included (the hidden region moves with each augmentation).
    x = to_model_input(images, cfg, gen, hide=HideLungs(hide), masks=masks)
    return [to_display(img) for img in x], ok  # un-normalised so people can look at it


def _caption(ctx: AppContext, i: int) -> str:
    """The class, short enough for a thumbnail at 1024 px (the gallery's label says when the images are synthetic)."""
    return display_name(ctx.index.classes[ctx.index.labels[i]])


def new_batch(ctx: AppContext, augs: list[str], hide: str = "none") -> tuple[list, list[int], list]:
    """A random batch of augmented training images; the first one's variants are shown beside its original."""
    seed = random.randrange(2**31)
    ids = random.Random(seed).sample(list(ctx.split.train), min(BATCH, len(ctx.split.train)))
    pictures, ok = _augmented(ctx, ids, augs, seed, hide)
    gallery = [(p, _caption(ctx, i)) for p, i in zip(pictures, ok)]
    return gallery, ok, variants(ctx, ok, augs, 0, hide)


def same_batch(ctx: AppContext, ids: list[int], augs: list[str], hide: str = "none") -> tuple[list, list]:
    """The batch on screen redrawn with other augmentations or hiding (a new random draw), and its first image's
    variants."""
    if not ids:
        return [], []
    pictures, ok = _augmented(ctx, ids, augs, random.randrange(2**31), hide)
    return [(p, _caption(ctx, i)) for p, i in zip(pictures, ok)], variants(ctx, ok, augs, 0, hide)


def variants(ctx: AppContext, ids: list[int], augs: list[str], k: int = 0, hide: str = "none") -> list:
    """The original of image k and several augmented versions of it (as the model gets them); with every
    augmentation off the copies are captioned as unchanged."""
    if not ids:
        return []
    i = ids[min(k, len(ids) - 1)]
    original, _ = _augmented(ctx, [i], [], 0)
    versions, _ = _augmented(ctx, [i] * VARIANTS, augs, random.randrange(2**31), hide)
    if augs:
        names = [f"augmented {n + 1}" for n in range(VARIANTS)]
    else:  # five identical copies: say so, or a student looks for a change that is not there
        names = [UNCHANGED if hide == "none" else "no augmentation: only the lungs hidden"] * VARIANTS
    return [(original[0], "original")] + list(zip(versions, names))


def select_variant(ctx: AppContext, ids: list[int], augs: list[str], hide: str, evt: gr.SelectData) -> list:
    return variants(ctx, ids, augs, evt.index, hide)


def build(ctx: AppContext) -> None:
    gr.Markdown(INTRO)
    gr.Markdown(summary(ctx), elem_id="data_summary")
    gr.Markdown(BIASES, elem_id="data_biases")
    gr.BarPlot(split_counts(ctx), x="class", y="images", color="split", title="Images per class and split",
               height=260, elem_id="counts_plot")
    preset = training_preset()
    base = apply_preset(preset).augment
    start = list(base.enabled())
    gr.Markdown(augment_note(preset), elem_id="aug_note")
    # Each box names the strength ticking it gives with the training preset, as the Train tab's boxes do.
    aug_box = gr.CheckboxGroup(choices=augmentation_choices(base), value=start,
                               label="Augmentations", elem_id="aug_box")
    hide_box = gr.Radio([c for c in HIDE_CHOICES if ctx.offers_hiding(c[1])], value="none", elem_id="hide_preview",
                        label="What the model gets (the shortcut experiment in Train hides the lungs like this)")
    batch_btn = gr.Button("New random batch", variant="primary", elem_id="batch_btn")
    first, first_ids, first_variants = new_batch(ctx, start)  # so the page opens with pictures
    batch_ids = gr.State(first_ids)
    synthetic = " of synthetic X-rays" if ctx.settings.synthetic else ""
    gallery = gr.Gallery(first, label=f"Augmented training samples{synthetic} (click one to see its variants)", columns=6,
                         height="auto", elem_id="samples_gallery", allow_preview=False)
    compare = gr.Gallery(first_variants, label="Original and augmented versions", columns=VARIANTS + 1, height="auto",
                         elem_id="variants_gallery", allow_preview=False)
    batch_btn.click(ctx.bind(new_batch), [aug_box, hide_box], [gallery, batch_ids, compare], api_name="new_batch")
    # A switch changes both rows: the same images again, with the augmentations (or hiding) now as chosen.
    for switch in (aug_box, hide_box):
        switch.change(ctx.bind(same_batch), [batch_ids, aug_box, hide_box], [gallery, compare], api_name=False)
    gallery.select(ctx.bind(select_variant), [batch_ids, aug_box, hide_box], [compare], api_name=False)
