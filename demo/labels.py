"""Words the tabs share: augmentation names (made from a config's own magnitudes, so the Data and Train tabs both
label their boxes from the preset they start with), preset titles, and the label of a model in every list. One
place, so the Data and Train tabs, Classify and Evaluate say the same thing."""

from __future__ import annotations

import time

from cxr.train.checkpoint import CheckpointInfo
from cxr.train.presets import TITLES
from cxr.data.transforms import AugmentConfig

_DEFAULT_AUG = AugmentConfig()
# Classify's accordion of the explanation methods side by side; the Train tab's shortcut lesson sends students there.
METHODS_PANEL = "Compare explanation methods, and check them against a random model"


def augmentation_labels(cfg: AugmentConfig = _DEFAULT_AUG) -> dict[str, str]:
    """'rotate ±10°' and so on, from the config's values: change a magnitude there and every label follows."""
    return {
        "hflip": "mirror left-right",
        "rotate": f"rotate ±{cfg.rotate:g}°",
        "scale": f"zoom ±{cfg.scale:.0%}",
        "translate": f"shift ±{cfg.translate:.0%}",
        "brightness": f"brightness ±{cfg.brightness:g}",
        "contrast": f"contrast ±{cfg.contrast:.0%}",
    }


def augmentation_choices(cfg: AugmentConfig = _DEFAULT_AUG) -> list[tuple[str, str]]:
    """(label, name) for each augmentation's checkbox, at the strength ticking it gives with `cfg` (a preset's own
    strength for those it has on, the default for the others; see `AugmentConfig.only`)."""
    labels = augmentation_labels(cfg.only(AugmentConfig.names()))
    return [(labels[name], name) for name in AugmentConfig.names()]


def preset_title(name: str) -> str:
    return TITLES.get(name, "Custom" if not name else name)


def _when(created: str, mtime: float) -> str:
    """'14:03' for today, '25 Nov 14:03' before (the checkpoint's own time, else the file's)."""
    try:
        t = time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        t = mtime
    same_day = time.strftime("%Y%m%d", time.localtime(t)) == time.strftime("%Y%m%d")
    return time.strftime("%H:%M" if same_day else "%d %b %H:%M", time.localtime(t))


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def model_label(info: CheckpointInfo, training: bool = False, synthetic_data: bool = False) -> str:
    """'Fast (CPU) · 14:03 · test 85.6 %', or '... · val 78.0 % (training)' / '(unfinished)': short enough for the
    model list at 1024 px. A model of synthetic images says so, unless all the server's data is synthetic (its
    banner says that once)."""
    parts = [preset_title(info.preset), _when(info.created, info.mtime)]
    if info.finished and not training:
        parts.append(f"test {percent(info.test_accuracy)}")
    elif info.val_accuracy is not None:
        parts.append(f"val {percent(info.val_accuracy)} " + ("(training)" if training else "(unfinished)"))
    else:
        parts.append("training" if training else "unfinished")
    if info.hide_lungs != "none":
        parts.append(f"lungs hidden ({info.hide_lungs})")
    if info.synthetic and not synthetic_data:
        parts.append("synthetic")
    return " · ".join(parts)
