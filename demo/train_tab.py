"""Train tab: settings, Start and Stop, live curves, and the test results when the run ends.

The run belongs to the server (`demo.job`), not to this page: every open page polls its snapshot once a second,
so a refresh or a second visitor sees the same curves and can stop it.
"""

from __future__ import annotations

from dataclasses import replace

import gradio as gr
import pandas as pd
import torch
from matplotlib.figure import Figure

from cxr.data import display_name
from cxr.model import FREEZE_LEVELS
from cxr.presets import DESCRIPTIONS, apply_preset, default_preset
from cxr.train import TrainConfig
from cxr.transforms import AugmentConfig

from .context import AppContext
from .data_tab import AUG_LABELS
from .job import JobBusy, Snapshot

INTRO = """
**Reading the curves.** *Training loss* is how wrong the model is on the images it is learning from; it should
fall. *Validation loss* and *validation accuracy* are measured on images it never trains on, every few steps:
they tell you whether it is learning the disease or memorising the pictures. When training loss keeps falling but
validation loss rises, the model is **overfitting**. Training stops when validation accuracy reaches the
grey target line. The final score comes from the separate **test** set, checked once at the end.
"""
PRESET_CHOICES = [("Fast (CPU)", "fast-cpu"), ("Recipe", "recipe"), ("GPU", "gpu")]
REASONS = {"target": "reached the target accuracy", "epochs": "ran all its epochs", "max_steps": "reached the step limit",
           "stopped": "stopped by a user"}


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def preset_values(name: str) -> tuple:
    """Widget values for a preset, in the order of `settings_widgets`."""
    cfg = apply_preset(name)
    return (DESCRIPTIONS[name], cfg.image_size, cfg.batch_size, cfg.lr, cfg.epochs, cfg.max_steps, cfg.eval_every,
            cfg.target_accuracy, cfg.freeze, list(cfg.augment.enabled()))


def build_config(ctx: AppContext, preset: str, image_size: float, batch_size: float, lr: float, epochs: float,
                 max_steps: float, eval_every: float, target: float, freeze: str, augs: list[str], weights: str,
                 seed: float) -> TrainConfig:
    """The widgets' values as a TrainConfig for this server's dataset, saving into its checkpoints folder."""
    if any(v is None for v in (image_size, batch_size, lr, epochs, max_steps, eval_every, target, seed)):
        raise ValueError("every setting needs a value")
    cfg = apply_preset(preset)
    return replace(
        cfg, data=str(ctx.settings.data_dir), image_size=int(image_size), batch_size=int(batch_size), lr=float(lr),
        epochs=int(epochs), max_steps=int(max_steps), eval_every=int(eval_every), target_accuracy=float(target),
        freeze=freeze, augment=AugmentConfig().only(augs or []), weights=weights, seed=int(seed),
        out=str(ctx.settings.checkpoints_dir / f"resnet18-{pd.Timestamp.now():%Y%m%d-%H%M%S}.pt"),
    )


def start_training(ctx: AppContext, *settings) -> str:
    try:
        ctx.job.start(build_config(ctx, *settings))
    except (JobBusy, ValueError) as e:
        raise gr.Error(str(e)) from None
    return "Starting: reading the dataset and building the model ..."


def stop_training(ctx: AppContext) -> str:
    if ctx.job.stop():
        return "Stopping after the current step ..."
    return "Nothing is training."


LOSS_CURVES = ("training loss", "validation loss")
ACC_CURVES = ("training accuracy", "validation accuracy", "target")
COLORS = ("#4c78a8", "#f58518", "#888888")  # training blue, validation orange, target grey, on both plots


def curves(snap: Snapshot) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long-format frames for the loss and accuracy plots (one row per point, `curve` names the line)."""
    loss, acc = [], []
    for e in snap.evaluations:
        loss += [{"step": e["step"], "loss": e["train_loss"], "curve": LOSS_CURVES[0]},
                 {"step": e["step"], "loss": e["val_loss"], "curve": LOSS_CURVES[1]}]
        acc += [{"step": e["step"], "accuracy": e["train_accuracy"], "curve": ACC_CURVES[0]},
                {"step": e["step"], "accuracy": e["val_accuracy"], "curve": ACC_CURVES[1]}]
    if snap.evaluations:
        target = snap.config.get("target_accuracy", 0.95)
        last = max(snap.evaluations[-1]["step"], snap.last_step.get("total_steps", 0))
        acc += [{"step": 0, "accuracy": target, "curve": "target"}, {"step": last, "accuracy": target, "curve": "target"}]
    return _frame(loss, "loss", LOSS_CURVES), _frame(acc, "accuracy", ACC_CURVES)


def _frame(rows: list[dict], y: str, names: tuple[str, ...]) -> pd.DataFrame:
    """Typed columns, and never empty: Gradio 6's plot stops drawing lines after it is given an empty frame, so
    "no data yet" is one blank (NaN) point per curve."""
    if not rows:
        rows = [{"step": 0, y: float("nan"), "curve": name} for name in names]
    return pd.DataFrame(rows, columns=["step", y, "curve"]).astype({"step": "int64", y: "float64", "curve": "str"})


def status_text(snap: Snapshot) -> str:
    if snap.status == "idle":
        return "No training yet. Choose settings and press **Start**."
    if snap.status == "failed":
        return f"**Training failed:** {snap.error}. The best checkpoint so far is kept."
    if snap.status == "done" and snap.done:
        d = snap.done
        name = d["checkpoint"].rsplit("/", 1)[-1]
        return (f"**Finished** after {d['steps']} steps ({d['epochs']:g} epochs): {REASONS.get(d['reason'], d['reason'])}. "
                f"Best validation accuracy {d['best_val_accuracy']:.1%}; **test accuracy {d['test_accuracy']:.1%}** "
                f"on {d['test_report']['count']} held-out images. Saved as `{name}`: pick it in **Classify**.")
    step = snap.last_step
    if not step:
        return "Starting: reading the dataset and building the model ..." if snap.status == "running" else "Stopping ..."
    head = "**Stopping** after this step" if snap.status == "stopping" else "**Training**"
    bar = f"<progress value='{step['step']}' max='{step['total_steps']}' style='width:100%'></progress>"
    return (f"{head} · step {step['step']} of {step['total_steps']} (epoch {step['epoch'] + 1}) · "
            f"{step['train_images_per_sec']:.1f} images/s · about {_fmt_time(step['eta_s'])} left{bar}")


def report_frame(report: dict) -> pd.DataFrame:
    rows = [{"class": display_name(k), **{m: round(v, 3) if isinstance(v, float) else v for m, v in r.items()}}
            for k, r in report["per_class"].items()]
    rows.append({"class": "macro average", **{m: round(v, 3) for m, v in report["macro"].items()}, "support": report["count"]})
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def confusion_figure(report: dict) -> Figure:
    """The confusion matrix as a figure (rows: true class, columns: predicted). Not pyplot: nothing global leaks."""
    names = [display_name(k) for k in report["classes"]]
    cm = torch.tensor(report["confusion_matrix"]).numpy()
    fig = Figure(figsize=(4.6, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for (r, c), v in pd.DataFrame(cm).stack().items():
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black", fontsize=12)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test set confusion matrix")
    return fig


def poll(ctx: AppContext, seen: int):
    """One tick of the page's timer: the progress line always, curves and results only when they changed."""
    snap = ctx.job.snapshot()
    buttons = (gr.update(interactive=not snap.active), gr.update(interactive=snap.status == "running"))
    if snap.version == seen:
        return (status_text(snap), gr.skip(), gr.skip(), gr.skip(), gr.skip(), *buttons, seen)
    loss, acc = curves(snap)
    if snap.done:
        report = snap.done["test_report"]
        results = (gr.update(value=report_frame(report), visible=True), gr.update(value=confusion_figure(report), visible=True))
    else:
        results = (gr.update(visible=False), gr.update(visible=False))
    return (status_text(snap), loss, acc, *results, *buttons, snap.version)


def build(ctx: AppContext) -> tuple[gr.Timer, list]:
    cuda = torch.cuda.is_available()
    preset0 = default_preset(cuda)
    values = preset_values(preset0)
    gr.Markdown(INTRO)
    with gr.Row():
        preset = gr.Radio(PRESET_CHOICES, value=preset0, label="Preset", elem_id="preset", scale=1)
        preset_info = gr.Markdown(values[0])
    with gr.Accordion("Settings", open=False, elem_id="settings_acc"):
        with gr.Row():
            image_size = gr.Slider(64, 320, values[1], step=32, label="Image size (px)")
            batch_size = gr.Slider(1, 256, values[2], step=1, label="Batch size")
            lr = gr.Number(values[3], label="Learning rate (Adam)", elem_id="lr")
        with gr.Row():
            epochs = gr.Number(values[4], precision=0, minimum=1, label="Epochs (at most)")
            max_steps = gr.Number(values[5], precision=0, minimum=0, label="Max steps (0: no limit)", elem_id="max_steps")
            eval_every = gr.Slider(1, 100, values[6], step=1, label="Evaluate every N steps", elem_id="eval_every")
            target = gr.Slider(0.5, 1.0, values[7], step=0.01, label="Target validation accuracy")
        with gr.Row():
            freeze = gr.Dropdown(list(FREEZE_LEVELS), value=values[8], label="Freeze layers up to (pretrained only)")
            augs = gr.CheckboxGroup([(AUG_LABELS[n], n) for n in AugmentConfig.names()], value=values[9], label="Augmentations")
            weights = gr.Dropdown(["auto", "imagenet", "none"], value="auto", label="Starting weights")
            seed = gr.Number(0, precision=0, label="Seed")
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="start_btn")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop_btn", interactive=False)
    status = gr.Markdown(status_text(ctx.job.snapshot()), elem_id="train_status")
    with gr.Row():
        empty = curves(Snapshot())
        loss_plot = gr.LinePlot(empty[0], x="step", y="loss", color="curve", title="Loss", height=300, elem_id="loss_plot",
                                y_lim=[0, None], color_map=dict(zip(LOSS_CURVES, COLORS)))
        acc_plot = gr.LinePlot(empty[1], x="step", y="accuracy", color="curve", title="Accuracy", height=300, elem_id="acc_plot",
                               y_lim=[0, 1], color_map=dict(zip(ACC_CURVES, COLORS)))
    with gr.Row():
        metrics = gr.DataFrame(label="Test set: per-class metrics", visible=False, elem_id="test_metrics")
        cm_plot = gr.Plot(label="Confusion matrix", visible=False, elem_id="cm_plot")
    seen = gr.State(-1)
    timer = gr.Timer(1.0)

    settings = [preset, image_size, batch_size, lr, epochs, max_steps, eval_every, target, freeze, augs, weights, seed]
    preset.change(preset_values, [preset], [preset_info, image_size, batch_size, lr, epochs, max_steps, eval_every,
                                             target, freeze, augs], api_name=False)
    start_btn.click(ctx.bind(start_training), settings, [status], api_name="start_training", concurrency_limit=None)
    stop_btn.click(ctx.bind(stop_training), None, [status], api_name="stop_training", concurrency_limit=None)
    poll_outputs = [status, loss_plot, acc_plot, metrics, cm_plot, start_btn, stop_btn, seen]
    timer.tick(ctx.bind(poll), [seen], poll_outputs, api_name="poll", concurrency_limit=None, show_progress="hidden")
    return timer, poll_outputs
