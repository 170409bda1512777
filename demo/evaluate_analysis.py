"""One model's analysis on its own test split, shared by every visitor of the Evaluate tab: the `Interpretation`
(`cxr.explain.interpret`: the model runs once over its test split per model file, for the whole server, through
`AppContext.cached`; its percentages calibrated as Classify shows them, with the reliability before and after),
the overlays drawn so far, and the views derived from it (the top losses, the confusion matrix, the per-class
metrics, each with its words). No gradio: the tab (`demo.evaluate_tab`) shows them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from cxr.data.cache import ImageCache
from cxr.data.index import DatasetIndex, Split, display_name, index_dataset, split_for
from cxr.data.lungs import HideLungs
from cxr.explain.figures import cam_overlays, share_text, true_probability
from cxr.explain.hidden import SENTENCE
from cxr.explain.interpret import Interpretation, Record, cache_for, interpret_as_trained
from cxr.explain.reliability import calibrated, calibration_sentences
from cxr.train.calibration import Calibration, measure_calibration

from .context import SAMPLE_SIZE, AppContext

# The loss is -log(probability of the true class): the order of the top losses is the order of that probability.
WRONG, RIGHT = "wrong: lowest probability on the true class", "right: highest probability on the true class"
SHOWN = 12  # pictures in the top-losses gallery: three rows of four
THUMB = SAMPLE_SIZE  # px: an overlay costs 150 KB at this size, and stays sharp four to a row


@dataclass
class Analysis:
    """One model file's interpretation and the overlays drawn so far, shared by every visitor."""

    name: str
    interp: Interpretation
    files: Sequence[Path]  # the listing `interp.ids` index into
    image_size: int
    app_ids: list[int | None]  # per interpretation row: the image's id in ctx.index (what Classify opens)
    synthetic: bool
    notes: tuple[str, ...]  # where its test set here differs from the one it was tested on (see split_for)
    config: dict = field(default_factory=dict)  # the model's settings: a run that hid the lungs is drawn as it saw
    # its test images' reliability before and after its temperature (`measure_calibration`), and what the run fitted
    calibration: dict = field(default_factory=dict)
    fitted: Calibration = field(default_factory=Calibration)
    tiles: dict[int, np.ndarray] = field(default_factory=dict)  # row -> overlay, THUMB px, drawn once
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def draw(self, model: torch.nn.Module, records: Sequence[Record], cache: ImageCache | None = None) -> None:
        """Grad-CAM overlays for the records not drawn yet, in one batch."""
        with self.lock:
            todo = [r for r in dict.fromkeys(records) if r.row not in self.tiles]
            if todo:
                masks = HideLungs.from_config(self.config).needs_masks  # the lungs it hid, outlined
                cache = cache or ImageCache(self.files, self.image_size, masks=masks)  # decodes only these images
                for r, tile in zip(todo, cam_overlays(model, cache, self.interp, todo, THUMB, config=self.config)):
                    self.tiles[r.row] = tile


def caption(r: Record) -> str:
    """'true COVID (2 %) · called Normal': the probability beside the true class is the one the list is sorted by
    (the loss is its -log), not the called class's; as long as the old caption, to fit a thumbnail at 1024 px."""
    return f"true {display_name(r.true)} ({share_text(true_probability(r))}) · called {display_name(r.predicted)}"


def shown_records(interp: Interpretation, which: str) -> list[Record]:
    """The wrong calls with the largest losses (lowest probability on the true class first), or the right ones with
    the smallest (highest first)."""
    wrong = which != RIGHT
    return [r for r in interp.top_losses(None, largest=wrong) if (r.true != r.predicted) == wrong][:SHOWN]


def _test_set(ctx: AppContext, name: str, checkpoint) -> tuple[DatasetIndex, Split, list[int | None]]:
    """The model's own split, and where each image sits in the app's listing (Classify opens by that id)."""
    if tuple(checkpoint.classes) == ctx.index.classes:
        return ctx.index, ctx.split_for(name), list(range(len(ctx.index.files)))
    index = index_dataset(ctx.settings.data_dir, checkpoint.classes)  # a model of other classes: its own listing
    where = {f: i for i, f in enumerate(ctx.index.files)}
    split = split_for(index, checkpoint)
    return index, split, [where.get(f) for f in index.files]


def _compute(ctx: AppContext, name: str) -> Analysis:
    clf = ctx.classifier(name)
    ckpt = clf.checkpoint
    index, split, app_ids = _test_set(ctx, name, ckpt)
    cache = cache_for(ckpt, index)  # at the model's own resolution
    raw = interpret_as_trained(ckpt, cache, split.test, index.labels, device=clf.device)
    # Every view shows the percentages Classify shows (calibrated); the reliability diagram compares both.
    interp = calibrated(raw, ckpt.temperature)
    analysis = Analysis(name, interp, index.files, ckpt.image_size, [app_ids[i] for i in interp.ids],
                        ckpt.synthetic or index.synthetic, split.notes, config=ckpt.config,
                        calibration=measure_calibration(raw.probabilities, raw.y_true, ckpt.temperature),
                        fitted=Calibration.from_dict(ckpt.calibration))
    analysis.draw(clf.model, shown_records(interp, WRONG) + shown_records(interp, RIGHT), cache)
    return analysis


def analyse(ctx: AppContext, name: str) -> Analysis:
    """The analysis of model `name`, computed by the first visitor who asks for this version of the file."""
    path = ctx.checkpoint_path(name)  # ValueError for a name that is not a model in the folder
    return ctx.cached(("interpret", name, path.stat().st_mtime), lambda: _compute(ctx, name))



def confusion_frame(interp: Interpretation) -> pd.DataFrame:
    """Rows: the true class; columns: what the model called it; counts."""
    names = [display_name(k) for k in interp.classes]
    df = pd.DataFrame(interp.confusion_matrix(), columns=[f"called {n}" for n in names])
    df.insert(0, "true class", names)
    return df


def shade(df: pd.DataFrame) -> np.ndarray:
    """Right calls (the diagonal) green, mix-ups red, zeros left plain: the mistakes stand out on a projector."""
    right, wrong = "background-color: #c7ecc9", "background-color: #f8c4c0"
    return np.array([["" if c == 0 or not df.iat[r, c] else right if r == c - 1 else wrong for c in range(df.shape[1])]
                     for r in range(len(df))])


def metrics_frame(interp: Interpretation) -> pd.DataFrame:
    """One row per class: precision, recall, F1, one-vs-rest ROC AUC and the number of test images."""
    def fmt(v: float | None) -> str:  # two decimals always: a column of 1, 0.5 and 0.67 reads as a mistake
        return "n/a" if v is None else f"{v:.2f}"

    rows = [{"class": display_name(k), "precision": fmt(m["precision"]), "recall": fmt(m["recall"]),
             "F1": fmt(m["f1"]), "ROC AUC": fmt(m["roc_auc"]), "test images": m["support"]}
            for k, m in interp.per_class().items()]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "F1", "ROC AUC", "test images"])


def metrics_words(interp: Interpretation) -> str:
    words = interp.explanations()
    return "\n\n".join(f"**{display_name(k)}**\n" + "\n".join(f"- {s}." for s in words[k].values())
                       for k in interp.classes)


def confused_words(interp: Interpretation) -> str:
    lines = interp.confused_sentences()
    if not lines:
        return "**Most confused:** none. Every test X-ray was called right."
    return "**Most confused** (true class called another):\n" + "\n".join(f"- {s}" for s in lines)


def summary(analysis: Analysis) -> str:
    interp = analysis.interp
    wrong = int((interp.y_true != interp.y_pred).sum())
    text = f"On its {len(interp)} test X-rays this model is **{interp.accuracy:.1%} right** ({wrong} wrong)."
    if interp.skipped:
        text += f" {len(interp.skipped)} test images could not be read and are left out."
    for note in analysis.notes:
        text += f" *Note: {note}.*"
    if analysis.synthetic:
        text += " *Synthetic data: these are not real X-rays.*"
    if HideLungs.from_config(analysis.config).enabled:  # every picture below outlines what it never saw
        text += f"\n\n**{SENTENCE}**"
    return text


def calibration_text(analysis: Analysis) -> str:
    """The reliability diagram in words: what "90 %" means for this model before and after its temperature."""
    measured, fitted = analysis.calibration, analysis.fitted
    said = calibration_sentences(measured)
    ece = measured["ece"]
    lines = [f"**Before scaling:** {said['before']} (expected calibration error, ECE: {ece['before']:.3f})."]
    if fitted.note or fitted.ece_after is None:
        why = fitted.note or ("a run fits one when it ends: this model is still training, or was saved by an older "
                              "cxr")
        lines.append(f"**No temperature was fitted** ({why}): the percentages Classify shows are the network's own.")
    else:
        lines.append(f"**After dividing its logits by T = {measured['temperature']:.2f}** (fitted on its "
                     f"{fitted.images} {fitted.fitted_on} X-rays): {said['after']} (ECE {ece['after']:.3f}). "
                     "Classify shows these percentages; the answer itself never changes, only how sure it sounds.")
    return "\n\n".join(lines)
