"""Train tab: settings, Start and Stop, live curves and attention, and the test results when the run ends.

The run belongs to the server (`demo.job`), not to this page: the page-level timer polls its snapshot once a second,
so a refresh or a second visitor sees the same curves. Settings travel by name (`demo.train_settings`), and the
public `/start_training` API takes the same names as keywords. Who may press Start and Stop: `demo.teacher`.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np
import pandas as pd
import torch
from gradio.components.plot import PlotData

from cxr.train.config import TrainConfig
from cxr.data.index import display_name
from cxr.train.events import REASONS
from cxr.explain.maps import overlay
from cxr.explain.figures import confusion_figure, curves_figure
from cxr.explain.focus import shortcut_sentence
from cxr.bench.measure import format_duration
from cxr.train.model import is_random_fallback
from cxr.train.presets import apply_preset, default_preset, presets_for

from .context import AppContext
from .job import JobBusy, Snapshot
from .labels import percent, preset_title
from . import teacher
from .messages import hide_paths, public_record, user_error
from .train_settings import SETTING_NAMES, SETTINGS, build_config, preset_values

INTRO = """
**Reading the curves.** *Training loss* is how wrong the model is on the images it is learning from; it should
fall. *Validation loss* and *validation accuracy* are measured on images it never trains on, every few steps:
they tell you whether it is learning the disease or memorising the pictures. When training loss keeps falling but
validation loss rises, the model is **overfitting**. Training stops when validation accuracy reaches the
grey target line. The final score comes from the separate **test** set, checked once at the end.
"""
ATTENTION_LABEL = "Where the model looks (at each evaluation)"
# Once a run has started, in the browser only: Start and Stop at the top of the window, the status line and the
# curves under them, however far down the open settings pushed them (a projector shows 1024 x 768). Gradio's
# scroll_to_output stops short of them.
SCROLL_TO_RUN = """() => {
    const el = document.getElementById('start_btn');
    if (el) window.scrollTo({top: el.getBoundingClientRect().top + window.scrollY - 12});
}"""
RANDOM_WEIGHTS = ("**Training from random weights.** The ImageNet starting weights could not be loaded ({why}), so "
                  "this model learns vision from a few hundred X-rays: expect lower accuracy and slower progress, and "
                  "the 95 % target is unlikely. *(Teachers: the README's \"ImageNet weights offline\" section says "
                  "how to fix this.)*")


def start_run(ctx: AppContext, teacher_key: Any, preset: str, values: dict[str, Any]) -> str:
    """Start a run if the caller may (the teacher key, when set) and the settings are sound."""
    if not ctx.is_teacher(teacher_key):
        raise user_error(teacher.ONLY_TEACHER.split(":")[0] + ".")  # never echoes what was typed
    try:
        ctx.job.start(build_config(ctx, preset, values))
    except (JobBusy, ValueError) as e:
        raise user_error(str(e)) from None
    return "Starting: reading the dataset and building the model ..."


def start_handler(ctx: AppContext) -> Callable[..., str]:
    """`start_run` as a function of named parameters (teacher_key, preset, then SETTINGS' names): Gradio names
    the public API's parameters after them, so API callers pass settings by keyword, and leave out the ones that
    should keep the preset's value."""
    names = ["teacher_key", "preset", *SETTING_NAMES]

    def start_training(*args: Any) -> str:
        values = dict(zip(names, args))
        return start_run(ctx, values.pop("teacher_key"), values.pop("preset"), values)

    start_training.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None if n != "preset" else "fast-cpu")
         for n in names])
    return start_training


def stop_training(ctx: AppContext, teacher_key: Any = None) -> str:
    if not ctx.is_teacher(teacher_key):
        raise user_error("Only the teacher can stop a run.")
    if ctx.job.stop():
        return "Stopping after the current step ..."
    return "Nothing is training."


# ---------------------------------------------------------------------------------------------- the view
def attention_caption(true: str, called: str) -> str:
    """'Viral Pneumonia: right' or 'Normal, called COVID': a third of a 1024 px page wide, where the old
    'Viral Pneumonia · called Viral Pneumonia · step 10' lost the model's answer under an ellipsis."""
    if true == called:
        return f"{display_name(true)}: right"
    return f"{display_name(true)}, called {display_name(called)}"


def attention_gallery(ctx: AppContext, snap: Snapshot, k: int = -1):
    """Evaluation k's attention strip (default: the latest) as captioned overlays on the three X-rays, under a
    label that names its step."""
    if not snap.attention:
        return gr.update(value=[], label=ATTENTION_LABEL)
    strip = snap.attention[k]
    pictures = []
    for file, true, called, heat in zip(strip["files"], strip["classes"], strip["predicted"], strip["maps"]):
        image = _attention_image(ctx, file)
        pictures.append((overlay(image, np.asarray(heat, dtype=np.float32), 0.5), attention_caption(true, called)))
    return gr.update(value=pictures, label=f"Where the model looks at step {strip['step']}")


def _attention_image(ctx: AppContext, relative: str) -> np.ndarray:
    try:
        i = ctx.index.files.index(ctx.index.root / relative)
        images, ok = ctx.sample_cache.get([i])
        if ok:
            return images[0, 0].numpy()
    except ValueError:
        pass
    return np.full((224, 224), 64, dtype=np.uint8)  # the run used other data: show the map on grey


def weights_warning(snap: Snapshot) -> str:
    started = snap.started
    if started and is_random_fallback(started.get("weights", "")):  # "auto" fell back; "none" was a choice
        # The reason only (e.g. "could not download ImageNet weights (URLError)"): the server's folders are the
        # teacher's business (README), not every visitor's.
        return RANDOM_WEIGHTS.format(why=started.get("weights", "").split(": ", 1)[-1].split(";")[0].split(". Accuracy")[0])
    return ""


def status_text(snap: Snapshot, saved_as: str | None = None, may_start: bool = True) -> str:
    """The run's state in a line or two. `saved_as`: the finished model's label as Classify's list shows it (the
    file name otherwise); `may_start`: whether this page may press Start (a student's page waits for the teacher)."""
    started = snap.started
    where = (f" · {preset_title(snap.config.get('preset', ''))} on {started['device']}, "
             f"{'pretrained' if started.get('pretrained') else 'random'} weights") if started else ""
    if snap.status == "idle":
        return ("No training yet. Choose settings and press **Start**." if may_start else
                "No training yet: the curves appear here when the teacher starts a run.")
    if snap.status == "failed":
        return f"**Training failed:** {hide_paths(snap.error)}. The best checkpoint so far is kept."
    if snap.status == "done" and snap.done:
        d = snap.done
        head = f"**Finished** after {d['steps']} steps ({d['epochs']:g} epochs, {format_duration(d['seconds'])}): " \
               f"{REASONS.get(d['reason'], d['reason'])}{where}."
        if not d["checkpoint"]:
            return head + " It ended before its first evaluation, so nothing was saved."
        saved = f"*{saved_as}*" if saved_as else f"`{d['checkpoint'].rsplit('/', 1)[-1]}`"
        kept = "Last" if snap.config.get("keep") == "last" else "Best"  # the weights kept and tested
        return (f"{head} {kept} validation accuracy {percent(d['best_val_accuracy'])} (step {d['best_step']}); "
                f"**test accuracy {percent(d['test_accuracy'])}** on {d['test_report']['count']} held-out images. "
                f"Saved: pick {saved} in **Classify**.{hidden_lungs_sentence(snap)}")
    step = snap.last_step
    if not step:
        return ("Starting: reading the dataset and building the model ..." if snap.status == "running" else "Stopping ...")
    head = "**Stopping** after this step" if snap.status == "stopping" else "**Training**"
    budget = snap.config.get("time_budget_s") or 0
    if budget:  # a time budget: progress is time, the step count has no end to show
        elapsed = min(time.time() - snap.started_at, budget)
        bar = f"<progress value='{elapsed:.0f}' max='{budget:.0f}' style='width:100%'></progress>"
        where_in_run = f"step {step['step']} (epoch {step['epoch'] + 1}) · {format_duration(elapsed)} of {format_duration(budget)}"
    else:
        bar = f"<progress value='{step['step']}' max='{step['total_steps']}' style='width:100%'></progress>"
        where_in_run = f"step {step['step']} of {step['total_steps']} (epoch {step['epoch'] + 1})"
    return (f"{head}{where} · {where_in_run} · {step['train_images_per_sec']:.1f} images/s · "
            f"about {format_duration(step['eta_s'])} left{bar}")


def saved_label(ctx: AppContext, snap: Snapshot) -> str | None:
    """A finished run's model as the model lists label it, so the teacher can find it there."""
    name = Path(snap.done.get("checkpoint") or "").name
    return ctx.label_of(name) if snap.status == "done" and name else None


def expected_steps(snap: Snapshot) -> int:
    """The x range of the curves: the run's step count, or, under a time budget (whose step count is only an upper
    bound), the steps it will reach at its pace so far; a finished run ends at its last step."""
    step = snap.last_step
    if not step:
        return 0
    if not snap.config.get("time_budget_s"):
        return step["total_steps"]
    if not snap.active:
        return step["step"]
    return min(step["total_steps"], round(step["step"] + step["eta_s"] * snap.steps_per_second))


def hidden_lungs_sentence(snap: Snapshot) -> str:
    """The shortcut lesson in one sentence, against chance, when the lungs were hidden."""
    mode = snap.config.get("hide_lungs", "none")
    if mode == "none" or not snap.done.get("test_report"):
        return ""
    return "\n\n**" + shortcut_sentence(snap.done["test_accuracy"], len(snap.done["test_report"]["classes"]), mode) + "**"


def report_frame(report: dict) -> pd.DataFrame:
    """The test set's per-class metrics, named as the Evaluate tab names them."""
    def row(name: str, m: dict, count: int) -> dict:
        return {"class": name, "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
                "F1": round(m["f1"], 3), "test images": count}
    rows = [row(display_name(k), r, r["support"]) for k, r in report["per_class"].items()]
    rows.append(row("macro average", report["macro"], report["count"]))
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "F1", "test images"])


@dataclass
class TrainView:
    """The components the page-level timer updates, by name (so `poll` returns a dict, not a long tuple)."""

    status: gr.Markdown
    warning: gr.Markdown
    curves: gr.Plot
    attention: gr.Gallery
    attention_step: gr.Slider
    metrics: gr.DataFrame
    cm_plot: gr.Plot
    start_btn: gr.Button
    stop_btn: gr.Button
    seen: gr.State
    teacher: gr.State
    compare: gr.Dropdown
    key_box: gr.Textbox
    who: gr.Markdown

    def outputs(self) -> list[gr.components.Component]:
        return [self.status, self.warning, self.curves, self.attention, self.attention_step, self.metrics,
                self.cm_plot, self.start_btn, self.stop_btn, self.seen]


def _compare_history(ctx: AppContext, name: str | None) -> tuple[str, list[dict]] | None:
    if not name:
        return None
    try:
        clf = ctx.classifier(name)
    except ValueError:
        return None
    return next((m.label for m in ctx.models() if m.name == name), name), clf.checkpoint.metrics.get("history", [])


def poll(ctx: AppContext, view: TrainView, seen: int, teacher: bool, compare: str | None = None) -> dict:
    """One tick of the page's timer: the progress line always, curves and results only when they changed."""
    snap = ctx.job.snapshot()
    out = {view.status: status_text(snap, saved_label(ctx, snap), teacher),
           view.start_btn: gr.update(interactive=teacher and not snap.active),
           view.stop_btn: gr.update(interactive=teacher and snap.status == "running")}
    if snap.version == seen:
        return out
    out[view.curves] = rendered_curves(ctx, snap, compare)
    out[view.warning] = gr.update(value=weights_warning(snap), visible=bool(weights_warning(snap)))
    out[view.attention] = attention_gallery(ctx, snap)
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
    return attention_gallery(ctx, ctx.job.snapshot(), int(k))


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


def settings_editable(n: int):
    """The handler that greys out (or unlocks) the preset and the `n` settings as this page's teacher mode turns
    off (or on): the server decides who may Start, the page only shows it."""
    def editable(teacher: bool) -> list:
        return [gr.update(interactive=bool(teacher))] * n
    return editable


def build(ctx: AppContext) -> TrainView:
    cuda = torch.cuda.is_available()
    preset0 = default_preset(cuda)
    values = preset_values(preset0)
    teacher_only = ctx.settings.teacher_only
    key_box, who, teacher_state = teacher.build(ctx)
    with gr.Row():
        choices = [(preset_title(n), n) for n in presets_for(cuda)]
        # Why there is no GPU choice, under the choices rather than as a paragraph that pushes the curves down.
        preset = gr.Radio(choices, value=preset0, label="Preset", elem_id="preset", scale=1,
                          info=None if cuda else "No GPU preset: this server has no CUDA GPU.")
        preset_info = gr.Markdown(values["description"], elem_id="preset_info")
    widgets: dict[str, gr.components.Component] = {}
    with gr.Accordion("Settings", open=False, elem_id="settings_acc"):
        for row in (SETTINGS[0:5], SETTINGS[5:10], SETTINGS[10:14], SETTINGS[14:]):
            with gr.Row():
                for s in row:
                    extra = [s.choices(apply_preset(preset0), ctx)] if s.choices else []
                    widgets[s.field] = s.widget(values[s.field], *extra)
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="start_btn", interactive=not teacher_only)
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop_btn", interactive=False)
    status = gr.Markdown(status_text(ctx.job.snapshot(), may_start=not teacher_only), elem_id="train_status")
    warning = gr.Markdown(visible=False, elem_id="weights_warning")
    curves = gr.Plot(curves_figure([], 0, values["target_accuracy"]), label="Curves", show_label=False,
                     elem_id="curves", format="png")  # the figure titles its own axes; a badge would cover one
    gr.Markdown(INTRO)  # right under what it explains, so the curves come first on a projector
    compare = gr.Dropdown([], value=None, label="Compare with a saved run (its validation accuracy in green)",
                          info="Open the list and pick one of the saved runs.", elem_id="compare",
                          allow_custom_value=True)  # grows with the folder
    gr.Markdown("**Attention forming.** One validation X-ray per class, explained with Grad-CAM at every evaluation: "
                "watch where the model looks as it learns (after the run, scrub through the steps).")
    attention = gr.Gallery(label=ATTENTION_LABEL, columns=3, height="auto", allow_preview=False,
                           elem_id="attention_strip")
    attention_step = gr.Slider(0, 1, 0, step=1, label="Scrub through the run's evaluations (the strip names the step)",
                               visible=False,
                               elem_id="attention_step")
    with gr.Row():
        metrics = gr.DataFrame(label="Test set: per-class metrics", visible=False, elem_id="test_metrics",
                               wrap=True)  # "test images" fits at 1024 px
        cm_plot = gr.Plot(label="Confusion matrix", visible=False, elem_id="cm_plot", format="png")
    view = TrainView(status=status, warning=warning, curves=curves, attention=attention, attention_step=attention_step,
                     metrics=metrics, cm_plot=cm_plot, start_btn=start_btn, stop_btn=stop_btn, seen=gr.State(-1),
                     teacher=teacher_state, compare=compare, key_box=key_box, who=who)

    def show_preset(name: str) -> list:
        v, cfg = preset_values(name), apply_preset(name)
        return [v["description"]] + [gr.update(value=v[s.field], choices=s.choices(cfg, ctx)) if s.choices
                                              else v[s.field] for s in SETTINGS]

    preset.change(show_preset, [preset], [preset_info, *widgets.values()], api_name=False)
    # With a teacher key, a student's settings are the teacher's to choose: shown greyed, editable in teacher mode.
    editable = [preset, *widgets.values()]
    for w in editable:
        w.interactive = not teacher_only
    teacher_state.change(settings_editable(len(editable)), [teacher_state], editable, api_name=False,
                         show_progress="hidden")
    start_btn.click(start_handler(ctx), [key_box, preset, *[widgets[n] for n in SETTING_NAMES]], [status],
                    api_name="start_training", concurrency_limit=None, show_progress="hidden").success(
        None, None, None, js=SCROLL_TO_RUN, api_name=False)
    stop_btn.click(ctx.bind(stop_training), [key_box], [status], api_name="stop_training", concurrency_limit=None,
                   show_progress="hidden")
    status_api = ctx.bind(training_status)
    status_api.__annotations__ = {"return": dict}
    gr.api(status_api, api_name="training_status", concurrency_limit=None)
    attention_step.input(ctx.bind(scrub_attention), [attention_step], [attention], api_name=False)
    compare.input(ctx.bind(redraw_curves), [compare], [curves], api_name=False)
    return view
