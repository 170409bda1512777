"""The training settings: one dataclass, its bounds, and the words for each setting.

`TrainConfig` is the single description of a run. The CLI builds it from flags, the Train tab from widgets (one
table, field by field), the checkpoint stores `asdict(cfg)`, and `validate()` checks every number against `BOUNDS`,
the same table the app's widgets take their ranges from, so a setting out of range gets one sentence wherever it
came from (a flag, a widget, an API call).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cxr.data.index import DEFAULT_CLASSES, TEST_PER_CLASS, VAL_PER_CLASS, parse_classes
from cxr.errors import UserError
from cxr.data.lungs import DEFAULT_BOX, HIDE_MODES, HideLungs
from cxr.train.model import FREEZE_LEVELS
from cxr.data.transforms import AugmentConfig

# The real-image sample beside the project (../shared/cxr-sample) that benchmarks and smoke tests use; CXR_SAMPLE
# points elsewhere. Never copied into the project.
SAMPLE_DATA = Path(os.environ.get("CXR_SAMPLE", Path(__file__).resolve().parents[3] / "shared" / "cxr-sample"))
WEIGHTS_CHOICES = ("auto", "imagenet", "none")  # or a path to a state-dict file
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "onecycle")


@dataclass
class TrainConfig:
    data: str = "data/COVID-19_Radiography_Dataset"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    preset: str = ""  # the preset these settings started from, for labels ("" when set by hand)
    weights: str = "auto"  # ImageNet when available: a few hundred X-rays are too few to learn vision from scratch
    epochs: int = 10  # an upper bound; the recipe stops as soon as the target is reached
    max_steps: int = 0  # 0: no cap beyond `epochs`
    time_budget_s: float = 0.0  # 0: none; else stop (and test) once this many seconds have passed since the start
    batch_size: int = 6  # the recipe's batch size
    lr: float = 3e-5  # the recipe's Adam learning rate: small, since pretrained weights need only nudging
    optimizer: str = "adam"  # the recipe's; "adamw" decouples weight decay from the gradient step
    weight_decay: float = 0.0
    schedule: str = "constant"  # "onecycle": warm up, then anneal to zero over the run (steps or time budget)
    warmup: float = 0.1  # share of the run spent warming the learning rate up (onecycle only)
    keep: str = "best"  # the weights tested and kept: best validation, or "last" (a schedule that anneals ends best)
    label_smoothing: float = 0.0  # aim for 0.9 instead of 1.0 on the true class: less over-confidence
    image_size: int = 224  # ResNet18's native resolution
    auto_size: bool = False  # under a time budget, image_size is a ceiling: a slow machine trains smaller (plan.py)
    eval_every: int = 20  # steps between validation checks (the recipe's interval; a time budget adds some: see fit)
    target_accuracy: float = 0.95  # stop once validation accuracy reaches this; 0: no target (benchmarks)
    tta_flip: bool = False  # evaluate on each image and its mirror image, averaging the two predictions
    test_per_class: int = TEST_PER_CLASS  # held-out test images per class (the recipe's test set)
    test_fraction: float | None = None  # or a fraction of each class, for the full database
    val_per_class: int = VAL_PER_CLASS  # validation images per class, scored every `eval_every` steps
    seed: int = 0  # fixes the split, the head's initialisation, shuffling and augmentation
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    freeze: str = "none"  # freeze the stem and stages up to this (only with pretrained weights)
    hide_lungs: str = "none"  # "box": black out a central box; "mask": the dataset's lung masks (train, val and test)
    hide_box: tuple[float, float, float, float] = DEFAULT_BOX  # x from, x to, y from, y to (fractions)
    attention: bool = True  # re-explain one validation X-ray per class at every evaluation (the attention strip)
    channels_last: bool = False  # memory layout; faster on GPUs with AMP, not on this CPU at 224
    amp: bool = True  # bfloat16 autocast on CUDA
    cpu_bf16: bool = False  # bfloat16 autocast on a CPU that computes it natively (AMX or AVX512-BF16): ~1.8x there
    workers: int = 0  # processes decoding images ahead of training; 0 decodes in the loop (right for 2 CPUs)
    device: str = "auto"  # "auto": CUDA when present
    out: str = ""  # best checkpoint path; "" -> checkpoints/<checkpoint_name()>
    resume: str = ""  # a checkpoint to continue from
    save_last_every_s: float = 60.0  # how often the -last checkpoint (with optimiser state) is refreshed

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        for key in ("classes", "hide_box"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def validate(self) -> None:
        """Raise UserError with one sentence for the first setting out of its range (see BOUNDS)."""
        for name, (lo, hi, kind) in BOUNDS.items():
            value = getattr(self, name)
            if name == "test_fraction" and value is None:
                continue
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"{LABELS[name]} must be a whole number, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise UserError(f"{LABELS[name]} must be a number, got {value!r}")
            if not lo <= value <= hi:
                spec = "d" if kind is int else "g"  # a whole number prints as one: 1000000000, not 1e+09
                raise UserError(f"{LABELS[name]} must be between {lo:{spec}} and {hi:{spec}}, got {value:{spec}}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{LABELS[name]} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not isinstance(self.weights, str) or not self.weights:
            raise UserError(f"starting weights must be one of {', '.join(WEIGHTS_CHOICES)} or a file, got {self.weights!r}")
        try:
            HideLungs(self.hide_lungs, tuple(self.hide_box)).validate()
        except (TypeError, ValueError) as e:
            raise UserError(str(e) if isinstance(e, ValueError) else f"hide box must be four fractions, got {self.hide_box!r}") from None
        if not isinstance(self.augment, AugmentConfig):
            raise UserError("augment must be an AugmentConfig")
        parse_classes(self.classes)


# Each number setting: (lowest, highest, type). One table serves validate(), the CLI's help and the app's widgets.
BOUNDS: dict[str, tuple[float, float, type]] = {
    "epochs": (1, 10_000, int),
    "max_steps": (0, 10_000_000, int),
    "time_budget_s": (0, 7 * 86_400, float),
    "batch_size": (1, 1024, int),
    "lr": (1e-7, 1.0, float),  # beyond 1 Adam diverges at once: the first loss is NaN
    "weight_decay": (0.0, 1.0, float),
    "warmup": (0.0, 0.9, float),
    "label_smoothing": (0.0, 0.5, float),
    "image_size": (32, 1024, int),
    "eval_every": (1, 100_000, int),
    "target_accuracy": (0.0, 1.0, float),
    "test_per_class": (1, 1_000_000, int),
    "test_fraction": (0.001, 0.9, float),
    "val_per_class": (1, 1_000_000, int),
    "seed": (0, 2**31 - 1, int),
    "workers": (0, 64, int),
    "save_last_every_s": (0.0, 1e9, float),
}
# Each setting with a fixed list of values.
CHOICES: dict[str, tuple[str, ...]] = {
    "freeze": FREEZE_LEVELS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "keep": ("best", "last"),
    "hide_lungs": tuple(HIDE_MODES),
    "device": ("auto", "cpu", "cuda"),
}
LABELS = {name: name.replace("_", " ") for name in [f.name for f in fields(TrainConfig)]}
LABELS.update(lr="learning rate", time_budget_s="time budget (seconds)", target_accuracy="target accuracy",
              tta_flip="test-time flip")
