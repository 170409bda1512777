"""Evaluate tab: where a saved model goes wrong on its own test split, and why.

For the chosen model it shows its top losses: the wrong calls that gave the true class the lowest probability (or
the right calls that gave it the highest), each under the Grad-CAM of the class it chose; a confusion matrix whose
numbers open the X-rays of that cell; its most confused pairs in words; per-class precision, recall, F1 and ROC
AUC with a sentence each; and a reliability diagram (can its percentages be trusted, before and after temperature
scaling). All of it comes from one `Analysis` per model file (`demo.evaluate_analysis`). The tab's
components live in `EvaluateTab`; each handler returns a dict keyed by them. Clicking an X-ray puts its dataset id
into `open_id`, which the page hands to the Classify tab. A report (`cxr.explain.report`) can be downloaded as a
zip. `CSS` is this tab's share of the page's style sheet.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from cxr.data.index import display_name
from cxr.explain.interpret import Record
from cxr.explain.reliability import reliability_figure
from cxr.explain.report import write_report

from .context import AppContext
from .evaluate_analysis import (RIGHT, WRONG, Analysis, analyse, calibration_text, caption, confused_words,
                                confusion_frame, metrics_frame, metrics_words, shade, shown_records, summary)
from .messages import not_yet, user_error

log = logging.getLogger(__name__)

INTRO = """
**Look at what it gets wrong, and why.** Everything here is measured on the chosen model's own **test** X-rays,
which it never saw while training. The colour on each picture (Grad-CAM) shows where the model looked for the
class it chose: on the lungs, or on a label, a shoulder or the border? **Click a picture** to open it in
**Classify**; **click a number** in the confusion matrix to see those X-rays.
"""
CELL_SHOWN = 24  # pictures of one confusion-matrix cell, largest loss first
COLUMNS = 4  # pictures per row: large enough on a projector for the caption to fit in two lines
CELL_HINT = "Click a number in the matrix to see those X-rays here."
FAILED = "Something went wrong while evaluating this model. Please try another one."
REPORT_FAILED = "Something went wrong while writing the report. Please try again."
# For the page's css (demo.ui): captions wrap instead of being cut off ("(2 %) · called Normal" is their point).
CSS = """
#eval_losses .caption-label, #eval_cell .caption-label { white-space: normal; max-width: calc(100% - 12px); }
"""


@dataclass
class EvaluateTab:
    """The tab's components, by role."""

    model: gr.Dropdown
    summary: gr.Markdown
    body: gr.Column  # everything under the summary, hidden while there is no model
    which: gr.Radio  # wrong or right calls
    losses: gr.Gallery
    loss_ids: gr.State  # the dataset id of each picture in `losses`
    confusion: gr.Dataframe
    confused: gr.Markdown
    cell_text: gr.Markdown
    cell: gr.Gallery
    cell_ids: gr.State
    metrics: gr.Dataframe
    words: gr.Markdown
    reliability: gr.Plot  # confidence against accuracy, before and after temperature scaling
    calibration: gr.Markdown
    report_btn: gr.Button
    download_btn: gr.DownloadButton
    open_id: gr.State  # the dataset id of a clicked picture, for Classify
    open_events: list  # the clicks that fill `open_id` (demo.ui opens Classify after them)

    @property
    def model_outputs(self) -> list[gr.components.Component]:
        return [self.summary, self.losses, self.loss_ids, self.confusion, self.confused, self.metrics, self.words,
                self.reliability, self.calibration, self.which, self.cell, self.cell_text, self.cell_ids, self.download_btn, self.body]


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


# ------------------------------------------------------------------------------------------------ handlers
def show_model(ctx: AppContext, tab: EvaluateTab, name: str | None) -> dict:
    """Everything the tab shows for one model, starting from the top losses of its wrong calls (the switch set back
    to "wrong", the cell gallery cleared, the download button hidden until a report is made); with no model, only
    the sentence saying when there will be one."""
    out = {tab.which: WRONG, tab.cell: gr.update(value=[], visible=False), tab.cell_text: CELL_HINT, tab.cell_ids: [],
           tab.download_btn: gr.update(value=None, visible=False)}
    if not name:
        return {**out, tab.summary: ctx.no_model_yet(countdown=False), tab.losses: gr.update(value=[], visible=False),
                tab.loss_ids: [], tab.confusion: pd.DataFrame(), tab.confused: "", tab.metrics: pd.DataFrame(),
                tab.words: "", tab.reliability: None, tab.calibration: "", tab.body: gr.update(visible=False)}
    analysis = _analysis(ctx, name)
    interp = analysis.interp
    out[tab.losses], out[tab.loss_ids] = _gallery(ctx, analysis, shown_records(interp, WRONG))
    text = summary(analysis)
    if name == ctx.running_checkpoint():
        text += (" *This model is still training: these are its best weights so far. Nothing here feeds back into "
                 "training (it never sees the test set); the run's own test score comes when it ends.*")
    return {**out, tab.summary: text, tab.confusion: confusion_frame(interp).style.apply(shade, axis=None),
            tab.confused: confused_words(interp), tab.metrics: metrics_frame(interp), tab.words: metrics_words(interp),
            tab.reliability: reliability_figure(analysis.calibration), tab.calibration: calibration_text(analysis),
            tab.body: gr.update(visible=True)}


def show_losses(ctx: AppContext, tab: EvaluateTab, name: str | None, which: str) -> dict:
    """The top-losses gallery only, for the wrong / right switch."""
    if not name:
        return {tab.losses: gr.update(value=[], visible=False), tab.loss_ids: []}
    analysis = _analysis(ctx, name)
    gallery, ids = _gallery(ctx, analysis, shown_records(analysis.interp, which))
    return {tab.losses: gallery, tab.loss_ids: ids}


def select_cell(ctx: AppContext, tab: EvaluateTab, name: str | None, evt: gr.SelectData) -> dict:
    """A click on the confusion matrix: the X-rays of that cell, largest loss first."""
    row, col = evt.index
    if not name or col == 0:
        return {tab.cell: gr.skip(), tab.cell_text: "Click a number, not a class name, to see those X-rays.",
                tab.cell_ids: gr.skip()}
    analysis = _analysis(ctx, name)
    interp = analysis.interp
    if not (0 <= row < len(interp.classes) and 1 <= col <= len(interp.classes)):
        return {tab.cell: gr.skip(), tab.cell_text: CELL_HINT, tab.cell_ids: gr.skip()}
    records = interp.cell(row, col - 1)
    true, called = display_name(interp.classes[row]), display_name(interp.classes[col - 1])
    what = f"**{true} X-rays the model called {called}: {len(records)}**"
    more = (f" (the {CELL_SHOWN} with the lowest probability on {true} shown)" if len(records) > CELL_SHOWN else "") + (
        ". Click one to open it in Classify." if records else ". Nothing to show.")
    gallery, ids = _gallery(ctx, analysis, records[:CELL_SHOWN])
    return {tab.cell: gallery, tab.cell_text: what + more, tab.cell_ids: ids}


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
        key = ("report", name, path.stat().st_mtime)
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
    """For API users: the model's test-split interpretation as JSON (report, roc_auc, top_losses, most_confused),
    and its calibration there (temperature, ece, reliability) as `python -m cxr evaluate --json` gives it."""
    analysis = _analysis(ctx, name)
    interp = analysis.interp
    root = ctx.settings.data_dir

    def rel(file: str) -> str:  # paths relative to the dataset: never where it lies on the server
        return Path(file).relative_to(root).as_posix() if Path(file).is_relative_to(root) else Path(file).name

    out = interp.to_dict()
    out["top_losses"] = [{**r, "file": rel(r["file"])} for r in out["top_losses"]]
    out["skipped"] = {rel(f): why for f, why in out["skipped"].items()}
    return {"model": name, **out, **analysis.calibration}


def build(ctx: AppContext) -> EvaluateTab:
    gr.Markdown(INTRO)
    models = ctx.models()
    with gr.Row(equal_height=True):
        model = gr.Dropdown([(m.label, m.name) for m in models], value=ctx.default_model(models), label="Model",
                            allow_custom_value=True, elem_id="eval_model", scale=4)
        report_btn = gr.Button("Make a report (zip)", elem_id="eval_report", scale=1)
        download_btn = gr.DownloadButton("Download the report", visible=False, variant="primary",
                                         elem_id="eval_download", scale=1)
    summary_text = gr.Markdown(ctx.no_model_yet(countdown=False) if not models else "", elem_id="eval_summary")

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

        gr.Markdown("### Can you trust its percentages?\n"
                    "A model is *calibrated* when its percentages mean what they say: of the X-rays it calls with "
                    "90 %, about 90 % are right. Each bar is one range of percentages; its height is how often the "
                    "model was right there; the dashed line is where a calibrated model's bars would end. A bar "
                    "below the line: there it sounded surer than it was.")
        reliability = gr.Plot(format="png", show_label=False, elem_id="eval_reliability")
        calibration = gr.Markdown(elem_id="eval_calibration")
    tab = EvaluateTab(model=model, summary=summary_text, body=body, which=which, losses=losses, loss_ids=gr.State([]),
                      confusion=confusion, confused=confused, cell_text=cell_text, cell=cell, cell_ids=gr.State([]),
                      metrics=metrics, words=words, reliability=reliability, calibration=calibration, report_btn=report_btn, download_btn=download_btn,
                      open_id=gr.State(None), open_events=[])

    heavy = {"concurrency_limit": 2, "concurrency_id": "evaluate", "api_name": False}
    # No trigger named: on page load, and whenever the model changes (a visitor's choice, or the list refresh).
    gr.on(None, ctx.bind(show_model, tab), [model], tab.model_outputs, **heavy)
    which.input(ctx.bind(show_losses, tab), [model, which], [losses, tab.loss_ids], **heavy)
    confusion.select(ctx.bind(select_cell, tab), [model], [cell, cell_text, tab.cell_ids], **heavy)
    tab.open_events += [losses.select(open_image, [tab.loss_ids], [tab.open_id], api_name=False),
                        cell.select(open_image, [tab.cell_ids], [tab.open_id], api_name=False)]
    report_btn.click(ctx.bind(prepare_report), [model], [download_btn], **heavy)
    gr.api(ctx.bind(evaluate_model), api_name="evaluate_model", concurrency_limit=2, concurrency_id="evaluate")
    return tab
