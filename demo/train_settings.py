"""The Train tab's settings by name: `SETTINGS` is the one table from a TrainConfig field to its widget and back.

A new setting in the page needs one more line in that table, nothing else: the widgets (their ranges from
`BOUNDS`, their rows by name), the preset switch, the public `/start_training` API's keyword parameters and
`build_config` (the widgets' values -> a validated TrainConfig for this server's data and checkpoints folder) all
read it by name. A setting left out of an API call (None) keeps the chosen preset's value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import gradio as gr
import torch

from cxr.train.checkpoint import checkpoint_name
from cxr.train.config import BOUNDS, CHOICES, WEIGHTS_CHOICES, TrainConfig
from cxr.train.presets import DESCRIPTIONS, apply_preset, default_preset, presets_for

from .context import AppContext
from .labels import augmentation_choices


@dataclass(frozen=True)
class Setting:
    """One TrainConfig field in the page: how to draw its widget and how to read a value back."""

    field: str
    row: str  # the settings are laid out in rows, by this name, in the table's order
    widget: Callable[[Any], gr.components.Component]  # the preset's value -> the widget
    # (widget value, the preset's config) -> config value (default: cast by BOUNDS' type)
    read: Callable[[Any, TrainConfig], Any] | None = None
    show: Callable[[TrainConfig], Any] | None = None  # config -> widget value (default: the field)
    # (config, server) -> the widget's choices, when they vary by preset or by what the server's data holds
    choices: Callable[[TrainConfig, AppContext], list] | None = None


def _number(label: str, field: str, **kw: Any) -> Callable[[Any], gr.components.Component]:
    lo, hi, kind = BOUNDS[field]
    return lambda v: gr.Number(v, label=label, minimum=lo, maximum=hi, precision=0 if kind is int else None, **kw)


def _slider(label: str, field: str, step: float) -> Callable[[Any], gr.components.Component]:
    lo, hi, _ = BOUNDS[field]
    return lambda v: gr.Slider(lo, hi, v, step=step, label=label, elem_id=field)


def _choice(label: str, field: str) -> Callable[[Any], gr.components.Component]:
    return lambda v: gr.Dropdown(list(CHOICES[field]), value=v, label=label, elem_id=field)


# The one table: a new TrainConfig setting in the page needs one more line here, nothing else.
HIDE_CHOICES = [("show the lungs", "none"), ("hide a central box", "box"), ("hide the lung masks", "mask")]
SETTINGS: list[Setting] = [
    Setting("image_size", "shape", _slider("Image size (px)", "image_size", 16)),  # 16: the presets' 112 and 224
    Setting("batch_size", "shape", _slider("Batch size", "batch_size", 1)),
    Setting("lr", "shape", _number("Learning rate", "lr", elem_id="lr")),
    Setting("optimizer", "shape", _choice("Optimiser", "optimizer")),
    Setting("schedule", "shape", _choice("Learning-rate schedule", "schedule")),
    Setting("epochs", "length", _number("Epochs (at most)", "epochs")),
    Setting("max_steps", "length", _number("Max steps (0: no limit)", "max_steps", elem_id="max_steps")),
    Setting("time_budget_s", "length", _number("Time budget, seconds (0: none)", "time_budget_s", elem_id="time_budget_s")),
    Setting("eval_every", "length", _number("Evaluate every N steps", "eval_every", elem_id="eval_every")),
    Setting("target_accuracy", "length", _slider("Target validation accuracy", "target_accuracy", 0.01)),
    Setting("label_smoothing", "tricks", _slider("Label smoothing", "label_smoothing", 0.05)),
    Setting("tta_flip", "tricks", lambda v: gr.Checkbox(v, label="Evaluate on mirror images too (test-time flip)")),
    Setting("freeze", "tricks", _choice("Freeze layers up to (pretrained only)", "freeze")),
    # Its boxes name the strength a tick gives with the preset chosen (Fast's zoom is gentler than the recipe's).
    Setting("augment", "tricks", lambda v, choices: gr.CheckboxGroup(choices, value=v, label="Augmentations",
                                                                      elem_id="augment"),
            read=lambda v, preset: preset.augment.only(v or []), show=lambda cfg: list(cfg.augment.enabled()),
            choices=lambda cfg, ctx: augmentation_choices(cfg.augment)),
    # Hiding the lung masks is offered only when the dataset has them (the Kaggle v4 release's masks/ folders).
    Setting("hide_lungs", "start", lambda v, choices: gr.Radio(choices, value=v, elem_id="hide_lungs",
                                                               label="Shortcut experiment: hide the lungs from the model"),
            choices=lambda cfg, ctx: [c for c in HIDE_CHOICES if ctx.offers_hiding(c[1])]),
    # A weights file is a CLI feature: visitors name no server files.
    Setting("weights", "start", lambda v: gr.Dropdown(list(WEIGHTS_CHOICES), value=v, label="Starting weights")),
    Setting("seed", "start", _number("Seed", "seed")),
]
SETTING_NAMES = [s.field for s in SETTINGS]


def api_type(setting: Setting) -> Any:
    """The type of the setting's `/start_training` parameter, as the API's documentation gives it (None: left
    out, the preset's value)."""
    kind = list[str] if setting.field == "augment" else type(getattr(TrainConfig(), setting.field))
    return kind | None


def preset_values(name: str) -> dict[str, Any]:
    """The widgets' values for a preset, by setting name, plus the preset's description."""
    cfg = apply_preset(name)
    values = {s.field: s.show(cfg) if s.show else getattr(cfg, s.field) for s in SETTINGS}
    return {"description": DESCRIPTIONS[name], **values}


def _read(setting: Setting, value: Any, preset: TrainConfig) -> Any:
    if setting.read is not None:
        return setting.read(value, preset)
    kind = BOUNDS.get(setting.field, (0, 0, None))[2]
    if isinstance(getattr(TrainConfig(), setting.field), bool) and not isinstance(value, bool):
        raise ValueError(f"{setting.field.replace('_', ' ')} must be true or false")
    try:
        if kind is int:
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        return float(value) if kind is float else value
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{setting.field.replace('_', ' ')} must be a number") from None


def build_config(ctx: AppContext, preset: str | None, values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from the preset (None: the machine's, `default_preset`) and the widgets' values by name, for
    this server's data and checkpoints. A setting left out (or None, an emptied field) keeps the preset's value.
    Raises ValueError (one sentence) for a mistyped or out-of-range value."""
    preset = default_preset(torch.cuda.is_available()) if preset is None else preset
    if preset not in presets_for(torch.cuda.is_available()):
        raise ValueError("choose one of the presets offered" + ("" if torch.cuda.is_available() else
                                                               ": the GPU preset needs a CUDA GPU, and this server has none"))
    base = apply_preset(preset)
    overrides = {s.field: _read(s, values[s.field], base) for s in SETTINGS if values.get(s.field) is not None}
    offered = WEIGHTS_CHOICES  # not a path, as the CLI takes: visitors name no server files
    if overrides.get("weights", base.weights) not in offered:
        raise ValueError(f"starting weights must be {', '.join(offered[:-1])} or {offered[-1]}")
    if not ctx.offers_hiding(overrides.get("hide_lungs", base.hide_lungs)):  # only an API caller can ask for it
        raise ValueError("this dataset has no lung masks (the Kaggle v4 release keeps them in masks/ folders): "
                         "hide the central box instead")
    if overrides.get("image_size", base.image_size) != base.image_size:
        overrides["auto_size"] = False  # a size chosen by hand is trained at, whatever the machine (cxr.train.plan)
    cfg = replace(base, **overrides, data=str(ctx.settings.data_dir),
                  out=str(ctx.settings.checkpoints_dir / checkpoint_name()))
    cfg.validate()
    return cfg
