"""The Train tab's attention strip: one validation X-ray per class with the run's Grad-CAM at an evaluation, and,
for a run that hid the lungs, each X-ray as the run saw it (the hidden region black and outlined) under the sentence
that says so (`cxr.explain.hidden`). Drawn from the job's `Snapshot` for every page alike.
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from cxr.explain.hidden import draw_map, hidden_region

from .context import SAMPLE_SIZE, AppContext
from .job import Snapshot
from .train_status import attention_caption

ATTENTION_LABEL = "Where the model looks (at each evaluation)"


def attention_view(ctx: AppContext, snap: Snapshot, k: int = -1) -> tuple[dict, dict]:
    """Evaluation k's strip (default: the latest) as captioned overlays under a label that names its step, and the
    note under it: what a run that hid the lungs never saw (hidden when it saw everything)."""
    if not snap.attention:
        return gr.update(value=[], label=ATTENTION_LABEL), gr.update(value="", visible=False)
    strip = snap.attention[k]
    pictures, sentences = [], []
    for file, true, called, heat in zip(strip["files"], strip["classes"], strip["predicted"], strip["maps"]):
        image, mask = _attention_image(ctx, file, snap.config.get("hide_lungs") == "mask")
        hidden = hidden_region(snap.config, image.shape, mask)
        sentences.append(hidden.sentence)
        pictures.append((draw_map(image, np.asarray(heat, dtype=np.float32), 0.5, hidden),
                         attention_caption(true, called)))
    note = " ".join(dict.fromkeys(s for s in sentences if s))
    return (gr.update(value=pictures, label=f"Where the model looks at step {strip['step']}"),
            gr.update(value=f"**{note}**" if note else "", visible=bool(note)))


def _attention_image(ctx: AppContext, relative: str, with_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The X-ray (and, when asked and there is one, its lung mask) from the app's sample cache."""
    try:
        i = ctx.index.files.index(ctx.index.root / relative)
        images, ok = ctx.sample_cache.get([i])
        if ok:
            mask = ctx.sample_cache.get_masks(ok)[0, 0].numpy() if with_mask and ctx.has_masks else None
            return images[0, 0].numpy(), mask
    except ValueError:  # not in this dataset, or its mask cannot be read: the map alone
        pass
    return np.full((SAMPLE_SIZE, SAMPLE_SIZE), 64, dtype=np.uint8), None  # the run used other data: the map on grey
