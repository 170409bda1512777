"""Evaluate tab: where a saved model goes wrong on its own test split, and why.

For the chosen model it shows its top losses: the wrong calls that gave the true class the lowest probability (or
the right calls that gave it the highest), each under the Grad-CAM of the class it chose; a confusion matrix whose
numbers open the X-rays of that cell; its most confused pairs in words; and per-class precision, recall, F1 and ROC
AUC with a sentence each. Everything comes from one `Interpretation` (`cxr.explain.interpret`): the model runs once over its
test split per model file, for the whole server (`AppContext.cached`), and each overlay is drawn once and kept.
Clicking an X-ray puts its dataset id into `open_id`, which the page hands to the Classify tab. A report
(`cxr.explain.report`) can be downloaded as a zip. `CSS` is this tab's share of the page's style sheet.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import numpy as np
import pandas as pd
import torch

from cxr.data.index import DatasetIndex, Split, display_name, index_dataset, split_for
from cxr.data.cache import ImageCache
from cxr.train.checkpoint import checkpoint_version
from cxr.explain.figures import cam_overlays
from cxr.explain.interpret import Interpretation, Record, cache_for, interpret_as_trained
from cxr.explain.report import write_report

from .context import AppContext
from .messages import not_yet, user_error

log = logging.getLogger(__name__)

INTRO = """
**Look at what it gets wrong, and why.** Everything here is measured on the chosen model's own **test** X-rays,
which it never saw while training. The colour on each picture (Grad-CAM) shows where the model looked for the
class it chose: on the lungs, or on a label, a shoulder or the border? **Click a picture** to open it in
**Classify**; **click a number** in the confusion matrix to see those X-rays.
"""
# The loss is -log(probability of the true class): the order of the top losses is the order of that probability.
WRONG, RIGHT = "wrong: lowest probability on the true class", "right: highest probability on the true class"
SHOWN = 12  # pictures in the top-losses gallery: three rows of four
CELL_SHOWN = 24  # pictures of one confusion-matrix cell, largest loss first
COLUMNS = 4  # pictures per row: large enough on a projector for the caption to fit in two lines
THUMB = 224  # px: an overlay costs 150 KB at this size, and stays sharp four to a row
CELL_HINT = "Click a number in the matrix to see those X-rays here."
FAILED = "Something went wrong while evaluating this model. Please try another one."
REPORT_FAILED = "Something went wrong while writing the report. Please try again."
# For the page's css (demo.ui): captions wrap instead of being cut off ("(2 %) · called Normal" is their point).
CSS = """
#eval_losses .caption-label, #eval_cell .caption-label { white-space: normal; max-width: calc(100% - 12px); }
"""


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
    tiles: dict[int, np.ndarray] = field(default_factory=dict)  # row -> overlay, THUMB px, drawn once
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def draw(self, model: torch.nn.Module, records: Sequence[Record], cache: ImageCache | None = None) -> None:
        """Grad-CAM overlays for the records not drawn yet, in one batch."""
        with self.lock:
            todo = [r for r in dict.fromkeys(records) if r.row not in self.tiles]
            if todo:
                cache = cache or ImageCache(self.files, self.image_size)  # decodes only these images
                for r, tile in zip(todo, cam_overlays(model, cache, self.interp, todo, THUMB)):
                    self.tiles[r.row] = tile


def _share(p: float) -> str:
    """A probability as a whole percent, never rounded to a certainty it is not ("<1 %", ">99 %")."""
    return "<1 %" if p < 0.005 else ">99 %" if p >= 0.995 else f"{100 * p:.0f} %"


def caption(r: Record) -> str:
    """'true COVID (2 %) · called Normal': the probability beside the true class is the one the list is sorted by
    (the loss is its -log), not the called class's; as long as the old caption, to fit a thumbnail at 1024 px."""
    return f"true {display_name(r.true)} ({_share(math.exp(-r.loss))}) · called {display_name(r.predicted)}"


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
    interp = interpret_as_trained(ckpt, cache, split.test, index.labels, device=clf.device)
    analysis = Analysis(name, interp, index.files, ckpt.image_size, [app_ids[i] for i in interp.ids],
                        ckpt.synthetic or index.synthetic, split.notes)
    analysis.draw(clf.model, shown_records(interp, WRONG) + shown_records(interp, RIGHT), cache)
    return analysis


def analyse(ctx: AppContext, name: str) -> Analysis:
    """The analysis of model `name`, computed by the first visitor who asks for this version of the file."""
    path = ctx.checkpoint_path(name)  # ValueError for a name that is not a model in the folder
    return ctx.cached(("interpret", name, checkpoint_version(path)), lambda: _compute(ctx, name))


def _analysis(ctx: AppContext, name: str | None) -> Analysis:
    """`analyse` at the handler boundary: a sentence for the visitor, never a traceback."""
    try:
        return analyse(ctx, name)  # type: ignore[arg-type]
    except ValueError as e:
        raise user_error(str(e)) from None
    except Exception:
        log.exception("evaluating %s failed", name)
        raise user_error(FAILED) from None  # logged above


def _gallery(ctx: AppContext, analysis: Analysis, records: list[Record]) -> tuple[dict, list[int | None]]:
    """Captioned overlays, hidden when there are none (an empty gallery reads as broken), and their dataset ids."""
    analysis.draw(ctx.classifier(analysis.name).model, records)
    pictures = [(analysis.tiles[r.row], caption(r)) for r in records]
    return gr.update(value=pictures, visible=bool(pictures)), [analysis.app_ids[r.row] for r in records]


# ------------------------------------------------------------------------------------------------ views
def confusion_frame(interp: Interpretation) -> pd.DataFrame:
    """Rows: the true class; columns: what the model called it; counts."""
    names = [display_name(k) for k in interp.classes]
    df = pd.DataFrame(interp.confusion_matrix(), columns=[f"called {n}" for n in names])
    df.insert(0, "true class", names)
    return df


def _shade(df: pd.DataFrame) -> np.ndarray:
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
    return text


# ------------------------------------------------------------------------------------------------ handlers
def show_model(ctx: AppContext, name: str | None):
    """Everything the tab shows for one model, starting from the top losses of its wrong calls (the switch set back
    to "wrong", the cell gallery cleared, the download button hidden until a report is made); with no model, only
    the sentence saying when there will be one."""
    reset = (WRONG, gr.update(value=[], visible=False), CELL_HINT, [], gr.update(value=None, visible=False))
    if not name:
        return (ctx.no_model_yet(countdown=False), gr.update(value=[], visible=False), [],
                pd.DataFrame(), "", pd.DataFrame(), "", *reset, gr.update(visible=False))
    analysis = _analysis(ctx, name)
    interp = analysis.interp
    gallery, ids = _gallery(ctx, analysis, shown_records(interp, WRONG))
    cm = confusion_frame(interp)
    text = summary(analysis)
    if name == ctx.running_checkpoint():
        text += (" *This model is still training: these are its best weights so far. Nothing here feeds back into "
                 "training (it never sees the test set); the run's own test score comes when it ends.*")
    return (text, gallery, ids, cm.style.apply(_shade, axis=None), confused_words(interp),
            metrics_frame(interp), metrics_words(interp), *reset, gr.update(visible=True))


def show_losses(ctx: AppContext, name: str | None, which: str):
    """The top-losses gallery only, for the wrong / right switch."""
    if not name:
        return gr.update(value=[], visible=False), []
    analysis = _analysis(ctx, name)
    return _gallery(ctx, analysis, shown_records(analysis.interp, which))


def select_cell(ctx: AppContext, name: str | None, evt: gr.SelectData):
    """A click on the confusion matrix: the X-rays of that cell, largest loss first."""
    row, col = evt.index
    if not name or col == 0:
        return gr.skip(), "Click a number, not a class name, to see those X-rays.", gr.skip()
    analysis = _analysis(ctx, name)
    interp = analysis.interp
    if not (0 <= row < len(interp.classes) and 1 <= col <= len(interp.classes)):
        return gr.skip(), CELL_HINT, gr.skip()
    records = interp.cell(row, col - 1)
    true, called = display_name(interp.classes[row]), display_name(interp.classes[col - 1])
    what = f"**{true} X-rays the model called {called}: {len(records)}**"
    more = (f" (the {CELL_SHOWN} with the lowest probability on {true} shown)" if len(records) > CELL_SHOWN else "") + (
        ". Click one to open it in Classify." if records else ". Nothing to show.")
    gallery, ids = _gallery(ctx, analysis, records[:CELL_SHOWN])
    return gallery, what + more, ids


def open_image(ids: list, evt: gr.SelectData) -> int:
    """A click on a picture: its dataset id, for the Classify tab to open."""
    if not ids or not 0 <= evt.index < len(ids) or ids[evt.index] is None:
        raise user_error("That X-ray cannot be opened in Classify; choose another.")
    return int(ids[evt.index])


def _write_zip(checkpoint: Path, data_dir: Path, reports: Path) -> str:
    """The report of `checkpoint` as `reports/<model>-report.zip`: one file per model, replaced when the model
    file changes, so the folder never holds more reports than there are models."""
    reports.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="card-", dir=reports))
    try:
        card = write_report(checkpoint, data_dir, work / checkpoint.stem, include_weights=False)
        made = shutil.make_archive(str(work / f"{checkpoint.stem}-report"), "zip", card)
        return str(Path(made).replace(reports / Path(made).name))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report_zip(ctx: AppContext, name: str | None) -> str:
    """The model card folder of `name` (README.md, figures, metrics.json) as a zip, written once per model file."""
    if not name:
        raise not_yet(ctx.no_model_yet(markdown=False, countdown=False))
    try:
        path = ctx.checkpoint_path(name)
        key = ("report", name, checkpoint_version(path))
        def write() -> str:
            return _write_zip(path, ctx.settings.data_dir, ctx.scratch / "reports")
        zip_path = ctx.cached(key, write)
        return zip_path if Path(zip_path).is_file() else write()
    except ValueError as e:
        raise user_error(str(e)) from None
    except Exception:
        log.exception("the report of %s failed", name)
        raise user_error(REPORT_FAILED) from None


def prepare_report(ctx: AppContext, name: str | None):
    """Make the zip, then show the button that downloads it."""
    return gr.update(value=report_zip(ctx, name), visible=True)


def evaluate_model(ctx: AppContext, name: str) -> dict:
    """For API users: the model's test-split interpretation as JSON (report, roc_auc, top_losses, most_confused)."""
    interp = _analysis(ctx, name).interp
    root = ctx.settings.data_dir

    def rel(file: str) -> str:  # paths relative to the dataset: never where it lies on the server
        return Path(file).relative_to(root).as_posix() if Path(file).is_relative_to(root) else Path(file).name

    out = interp.to_dict()
    out["top_losses"] = [{**r, "file": rel(r["file"])} for r in out["top_losses"]]
    out["skipped"] = {rel(f): why for f, why in out["skipped"].items()}
    return {"model": name, **out}


def build(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown(INTRO)
    models = ctx.models()
    with gr.Row(equal_height=True):
        model = gr.Dropdown([(m.label, m.name) for m in models], value=ctx.default_model(models), label="Model",
                            allow_custom_value=True, elem_id="eval_model", scale=4)
        report_btn = gr.Button("Make a report (zip)", elem_id="eval_report", scale=1)
        download_btn = gr.DownloadButton("Download the report", visible=False, variant="primary",
                                         elem_id="eval_download", scale=1)
    waiting = ctx.no_model_yet(countdown=False)
    summary_text = gr.Markdown(waiting if not models else "", elem_id="eval_summary")

    with gr.Column(visible=bool(models)) as body:  # with no model yet, only the sentence above: no empty tables
        gr.Markdown("### Top losses: the X-rays whose true class got the lowest probability\n"
                    "An X-ray's loss is large when the model gives its true class a low probability. **Wrong** lists "
                    "the wrong calls from the lowest such probability up, **right** the right calls from the highest "
                    "down; each caption gives the true class, that probability in brackets, and what the model "
                    "called it. The colour marks where it looked for the class it chose. Click a picture to open it "
                    "in **Classify**.")
        which = gr.Radio([WRONG, RIGHT], value=WRONG, show_label=False, elem_id="eval_which")
        pictures = {"show_label": False, "columns": COLUMNS, "height": "max-content", "object_fit": "contain",
                    "allow_preview": False, "buttons": []}
        losses = gr.Gallery(**pictures, elem_id="eval_losses")

        gr.Markdown("### Which classes does it mix up?")
        confusion = gr.Dataframe(label="Confusion matrix: rows are the true class, columns what the model called it. "
                                 "Click a number.", interactive=False, elem_id="eval_confusion")
        confused = gr.Markdown(elem_id="eval_confused")
        cell_text = gr.Markdown(CELL_HINT, elem_id="eval_cell_caption")
        cell = gr.Gallery(**pictures, visible=False, elem_id="eval_cell")

        gr.Markdown("### How good is it for each class?")
        metrics = gr.Dataframe(label="Per class, on the test X-rays", interactive=False, elem_id="eval_metrics")
        words = gr.Markdown(elem_id="eval_words")
    loss_ids, cell_ids = gr.State([]), gr.State([])
    open_id = gr.State(None)

    heavy = {"concurrency_limit": 2, "concurrency_id": "evaluate", "api_name": False}
    # No trigger named: on page load, and whenever the model changes (a visitor's choice, or the list refresh).
    gr.on(None, ctx.bind(show_model), [model], [summary_text, losses, loss_ids, confusion, confused, metrics, words,
                                                which, cell, cell_text, cell_ids, download_btn, body], **heavy)
    which.input(ctx.bind(show_losses), [model, which], [losses, loss_ids], **heavy)
    confusion.select(ctx.bind(select_cell), [model], [cell, cell_text, cell_ids], **heavy)
    open_events = [losses.select(open_image, [loss_ids], [open_id], api_name=False),
                   cell.select(open_image, [cell_ids], [open_id], api_name=False)]
    report_btn.click(ctx.bind(prepare_report), [model], [download_btn], **heavy)
    gr.api(ctx.bind(evaluate_model), api_name="evaluate_model", concurrency_limit=2, concurrency_id="evaluate")
    return {"model": model, "open_id": open_id, "open_events": open_events, "report_btn": report_btn,
            "download_btn": download_btn, "which": which}
