"""Train tab: settings, Start and Stop, live curves and attention, and the test results when the run ends.

The run belongs to the server (`demo.job`), not to this page: the page-level timer polls its snapshot once a second,
so a refresh or a second visitor sees the same curves; the run in words is `demo.train_status`. Settings travel by
name (`demo.train_settings`), and the public `/start_training` API takes the same names as keywords, each left out
keeping the chosen preset's value. Who may press Start and Stop: `demo.teacher`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import torch
from gradio.components.plot import PlotData

from cxr.explain.figures import confusion_figure, curves_figure
from cxr.train.config import TrainConfig
from cxr.train.presets import apply_preset, default_preset, presets_for

from . import teacher
from .attention_strip import ATTENTION_LABEL, attention_view
from .context import AppContext
from .job import JobBusy, Snapshot
from .labels import preset_title
from .messages import public_record, user_error
from .train_settings import SETTING_NAMES, SETTINGS, api_type, build_config, preset_values
from .train_status import (STATUS_ON_LOAD, attention_caption, expected_steps, report_frame,  # noqa: F401 (tests)
                           status_text, weights_warning)

INTRO = """
**Reading the curves.** *Training loss* is how wrong the model is on the images it is learning from; it should
fall. *Validation loss* and *validation accuracy* are measured on images it never trains on, every few steps:
they tell you whether it is learning the disease or memorising the pictures. When training loss keeps falling but
validation loss rises, the model is **overfitting**. Training stops when validation accuracy reaches the
grey target line. The final score comes from the separate **test** set, checked once at the end.
"""
# Once a run has started, in the browser only: Start and Stop at the top of the window, the status line and the
# curves under them, however far down the open settings pushed them (a projector shows 1024 x 768). Gradio's
# scroll_to_output stops short of them.
SCROLL_TO_RUN = """() => {
    const el = document.getElementById('start_btn');
    if (el) window.scrollTo({top: el.getBoundingClientRect().top + window.scrollY - 12});
}"""


def start_run(ctx: AppContext, teacher_key: Any, preset: str | None, values: dict[str, Any]) -> str:
    """Start a run if the caller may (the teacher key, when set) and the settings are sound."""
    if not ctx.is_teacher(teacher_key):
        raise user_error(teacher.ONLY_TEACHER.split(":")[0] + ".")  # never echoes what was typed
    try:
        ctx.job.start(build_config(ctx, preset, values))
    except (JobBusy, ValueError) as e:
        raise user_error(str(e)) from None
    return "Starting: reading the dataset and building the model ..."


def start_handler(ctx: AppContext) -> Callable[..., str]:
    """`start_run` as a function of named parameters (teacher_key, preset, then SETTINGS' names), each None when
    left out: the public API is made from this signature (`gr.api`), so an API caller passes settings by keyword
    and a setting left out keeps the preset's value, and a preset left out is this machine's (`default_preset`).
    (An API made from the page's widgets would fill each left-out setting with the widget's value on the page.)"""
    names = ["teacher_key", "preset", *SETTING_NAMES]

    def start_training(*args: Any, **kwargs: Any) -> str:
        values = {**dict.fromkeys(names), **dict(zip(names, args)), **kwargs}
        return start_run(ctx, values.pop("teacher_key"), values.pop("preset"), values)

    start_training.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names],
        return_annotation=str)
    start_training.__annotations__ = {"teacher_key": str | None, "preset": str | None, "return": str,
                                      **{s.field: api_type(s) for s in SETTINGS}}
    return start_training


def stop_training(ctx: AppContext, teacher_key: Any = None) -> str:
    if not ctx.is_teacher(teacher_key):
        raise user_error("Only the teacher can stop a run.")
    if ctx.job.stop():
        return "Stopping after the current step ..."
    return "Nothing is training."


# ---------------------------------------------------------------------------------------------- the view
def saved_label(ctx: AppContext, snap: Snapshot) -> str | None:
    """A finished run's model as the model lists label it, so the teacher can find it there."""
    name = Path(snap.done.get("checkpoint") or "").name
    return ctx.label_of(name) if snap.status == "done" and name else None


@dataclass
class TrainTab:
    """The tab's components, by name: the settings, the buttons, and what the page-level timer updates."""

    preset: gr.Radio
    preset_info: gr.Markdown
    widgets: dict[str, gr.components.Component]  # TrainConfig field -> its widget (demo.train_settings)
    status: gr.Markdown
    warning: gr.Markdown
    curves: gr.Plot
    attention: gr.Gallery
    attention_note: gr.Markdown  # what a run that hid the lungs never saw (demo.attention_strip)
    attention_step: gr.Slider
    metrics: gr.DataFrame
    cm_plot: gr.Plot
    start_btn: gr.Button
    stop_btn: gr.Button
    seen: gr.State  # the snapshot version this page shows
    compare: gr.Dropdown
    keys: teacher.TeacherBox

    def poll_outputs(self) -> list[gr.components.Component]:
        return [self.status, self.warning, self.curves, self.attention, self.attention_note, self.attention_step,
                self.metrics, self.cm_plot, self.start_btn, self.stop_btn, self.seen]

    @property
    def editable(self) -> list[gr.components.Component]:
        return [self.preset, *self.widgets.values()]

def _compare_history(ctx: AppContext, name: str | None) -> tuple[str, list[dict]] | None:
    if not name:
        return None
    try:
        clf = ctx.classifier(name)
    except ValueError:
        return None
    return next((m.label for m in ctx.models() if m.name == name), name), clf.checkpoint.metrics.get("history", [])


def poll(ctx: AppContext, view: TrainTab, seen: int, teacher: bool, compare: str | None = None) -> dict:
    """One tick of the page's timer: the progress line always, curves and results only when they changed."""
    snap = ctx.job.snapshot()
    out = {view.status: status_text(snap, saved_label(ctx, snap), teacher),
           view.start_btn: gr.update(interactive=teacher and not snap.active),
           view.stop_btn: gr.update(interactive=teacher and snap.status == "running")}
    if snap.version == seen:
        return out
    out[view.curves] = rendered_curves(ctx, snap, compare)
    out[view.warning] = gr.update(value=weights_warning(snap), visible=bool(weights_warning(snap)))
    out[view.attention], out[view.attention_note] = attention_view(ctx, snap)
    n = len(snap.attention)
    out[view.attention_step] = gr.update(maximum=max(n - 1, 1), value=max(n - 1, 0), visible=n > 1 and not snap.active)
    report = snap.done.get("test_report")
    out[view.metrics] = gr.update(value=report_frame(report), visible=True) if report else gr.update(visible=False)
    out[view.cm_plot] = gr.update(value=confusion_figure(report), visible=True) if report else gr.update(visible=False)
    out[view.seen] = snap.version
    return out


def training_status(ctx: AppContext) -> dict:
    """The public `/training_status` API: the run's state as data (what the page draws, without the pictures)."""
    snap = ctx.job.snapshot()
    return public_record({"status": snap.status, "text": status_text(snap), "config": snap.config,
                          "started": snap.started, "last_step": snap.last_step, "evaluations": snap.evaluations,
                          "notes": snap.notes, "done": snap.done, "error": snap.error})


def scrub_attention(ctx: AppContext, k: float) -> list:
    return attention_view(ctx, ctx.job.snapshot(), int(k))[0]


def rendered_curves(ctx: AppContext, snap: Snapshot, compare: str | None) -> PlotData:
    """The curves as the page's plot receives them (a PNG), drawn once per change of the run (and compared run)
    for every page: a class of 30 watching the run would otherwise encode 30 PNGs at every evaluation, 0.2 s of
    CPU each, on the two cores the run trains on."""
    if compare and compare not in {m.name for m in ctx.models()}:
        compare = None  # any other text draws no comparison: one picture for all of it, not one render per string

    def draw() -> PlotData:
        target = snap.config.get("target_accuracy", TrainConfig.target_accuracy)
        figure = curves_figure(snap.evaluations, expected_steps(snap), target,
                               _compare_history(ctx, compare))
        return gr.Plot(format="png", render=False).postprocess(figure)
    return ctx.figures.get(("curves", id(ctx.job), snap.version, compare), draw)


def redraw_curves(ctx: AppContext, compare: str | None) -> PlotData:
    return rendered_curves(ctx, ctx.job.snapshot(), compare)


def show_preset(ctx: AppContext, tab: TrainTab, name: str) -> dict:
    """The chosen preset's description, and its value (and choices) in every setting's widget."""
    values, cfg = preset_values(name), apply_preset(name)
    out = {tab.preset_info: values["description"]}
    for s in SETTINGS:
        out[tab.widgets[s.field]] = (gr.update(value=values[s.field], choices=s.choices(cfg, ctx)) if s.choices
                                     else values[s.field])
    return out


def settings_editable(tab: TrainTab, teacher_mode: bool) -> dict:
    """The preset and the settings greyed out (or unlocked) as this page's teacher mode turns off (or on): the
    server decides who may Start, the page only shows it."""
    return {w: gr.update(interactive=bool(teacher_mode)) for w in tab.editable}


def _settings(ctx: AppContext, preset0: str) -> dict[str, gr.components.Component]:
    """Every setting's widget, showing `preset0`'s values, in rows by the table's row names."""
    values, cfg, widgets = preset_values(preset0), apply_preset(preset0), {}
    for row in dict.fromkeys(s.row for s in SETTINGS):
        with gr.Row():
            for s in (s for s in SETTINGS if s.row == row):
                extra = [s.choices(cfg, ctx)] if s.choices else []
                widgets[s.field] = s.widget(values[s.field], *extra)
    return widgets


def build(ctx: AppContext) -> TrainTab:
    cuda = torch.cuda.is_available()
    preset0 = default_preset(cuda)
    teacher_only = ctx.settings.teacher_only
    keys = teacher.build(ctx)
    with gr.Row():
        choices = [(preset_title(n), n) for n in presets_for(cuda)]
        # Why there is no GPU choice, under the choices rather than as a paragraph that pushes the curves down.
        preset = gr.Radio(choices, value=preset0, label="Preset", elem_id="preset", scale=1,
                          info=None if cuda else "No GPU preset: this server has no CUDA GPU.")
        preset_info = gr.Markdown(preset_values(preset0)["description"], elem_id="preset_info")
    with gr.Accordion("Settings", open=False, elem_id="settings_acc"):
        widgets = _settings(ctx, preset0)
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="start_btn", interactive=not teacher_only)
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop_btn", interactive=False)
    status = gr.Markdown(STATUS_ON_LOAD, elem_id="train_status")  # the timer's first tick fills it in
    warning = gr.Markdown(visible=False, elem_id="weights_warning")
    curves = gr.Plot(curves_figure([], 0, apply_preset(preset0).target_accuracy), label="Curves", show_label=False,
                     elem_id="curves", format="png")  # the figure titles its own axes; a badge would cover one
    gr.Markdown(INTRO)  # right under what it explains, so the curves come first on a projector
    compare = gr.Dropdown([], value=None, label="Compare with a saved run (its validation accuracy in green)",
                          info="Open the list and pick one of the saved runs.", elem_id="compare",
                          allow_custom_value=True)  # grows with the folder
    gr.Markdown("**Attention forming.** One validation X-ray per class, explained with Grad-CAM at every evaluation: "
                "watch where the model looks as it learns (after the run, scrub through the steps).")
    attention = gr.Gallery(label=ATTENTION_LABEL, columns=3, height="auto", allow_preview=False,
                           elem_id="attention_strip")
    attention_note = gr.Markdown(visible=False, elem_id="attention_note")
    attention_step = gr.Slider(0, 1, 0, step=1, label="Scrub through the run's evaluations (the strip names the step)",
                               visible=False, elem_id="attention_step")
    with gr.Row():
        metrics = gr.DataFrame(label="Test set: per-class metrics", visible=False, elem_id="test_metrics",
                               wrap=True)  # "test images" fits at 1024 px
        cm_plot = gr.Plot(label="Confusion matrix", visible=False, elem_id="cm_plot", format="png")
    tab = TrainTab(preset=preset, preset_info=preset_info, widgets=widgets, status=status, warning=warning,
                   curves=curves, attention=attention, attention_note=attention_note, attention_step=attention_step,
                   metrics=metrics, cm_plot=cm_plot, start_btn=start_btn, stop_btn=stop_btn, seen=gr.State(-1),
                   compare=compare, keys=keys)
    _wire(ctx, tab)
    return tab


def _wire(ctx: AppContext, tab: TrainTab) -> None:
    tab.preset.change(ctx.bind(show_preset, tab), [tab.preset], [tab.preset_info, *tab.widgets.values()],
                      api_name=False)
    # With a teacher key, a student's settings are the teacher's to choose: shown greyed, editable in teacher mode.
    for w in tab.editable:
        w.interactive = not ctx.settings.teacher_only
    tab.keys.teacher.change(partial(settings_editable, tab), [tab.keys.teacher], tab.editable, api_name=False,
                            show_progress="hidden")
    start = start_handler(ctx)
    tab.start_btn.click(start, [tab.keys.key_box, tab.preset, *[tab.widgets[n] for n in SETTING_NAMES]], [tab.status],
                        api_name=False, concurrency_limit=None, show_progress="hidden").success(
        None, None, None, js=SCROLL_TO_RUN, api_name=False)
    gr.api(start, api_name="start_training", concurrency_limit=None)  # by keyword, see start_handler
    tab.stop_btn.click(ctx.bind(stop_training), [tab.keys.key_box], [tab.status], api_name="stop_training",
                       concurrency_limit=None, show_progress="hidden")
    status_api = ctx.bind(training_status)
    status_api.__annotations__ = {"return": dict}
    gr.api(status_api, api_name="training_status", concurrency_limit=None)
    tab.attention_step.input(ctx.bind(scrub_attention), [tab.attention_step], [tab.attention], api_name=False)
    tab.compare.input(ctx.bind(redraw_curves), [tab.compare], [tab.curves], api_name=False)
