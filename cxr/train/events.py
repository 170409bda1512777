"""The events `fit` yields: one small typed record per thing that happened, shared by every consumer.

The CLI prints them (a progress bar, or one JSON object per line with `--json`: `to_dict()` plus an "event" key),
the app plots them, the benchmark times them. The field names are the project's metric names: the same words
appear in JSON keys, table columns and plot axes. Every event is built by keyword (`kw_only`): several fields are
neighbouring floats, and a swapped pair must fail loudly rather than plot the wrong curve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(kw_only=True)
class Event:
    event: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, **asdict(self)}


@dataclass(kw_only=True)
class Started(Event):
    event: ClassVar[str] = "start"
    classes: list[str]
    counts: dict[str, int]  # images per class found on disk
    split: dict[str, int]  # train / val / test sizes
    layout: str
    synthetic: bool
    device: str
    weights: str  # where the starting weights came from, in words
    pretrained: bool  # False when training starts from random weights (much lower accuracy on a small set)
    trainable_params: int
    total_steps: int
    start_step: int
    checkpoint: str  # where the best weights will be saved
    image_size: int = 0  # what the run trains at (a planned run may choose below the preset's size)
    plan: str = ""  # why that size, in words ("this CPU trains 35 images/s at 112 px ...": cxr.train.plan)
    settings: dict[str, Any] | None = None  # the run's TrainConfig as a dict, so a consumer of the stream has it all


@dataclass(kw_only=True)
class Step(Event):
    event: ClassVar[str] = "step"
    step: int
    epoch: int
    total_steps: int
    train_loss: float
    train_images_per_sec: float
    eta_s: float


@dataclass(kw_only=True)
class Evaluated(Event):
    event: ClassVar[str] = "eval"
    step: int
    epoch: int
    total_steps: int
    train_loss: float  # mean over the steps since the previous evaluation
    train_accuracy: float  # on the augmented training batches since the previous evaluation
    val_loss: float
    val_accuracy: float
    train_images_per_sec: float
    eta_s: float
    is_best: bool
    checkpoint: str  # the best checkpoint so far


@dataclass(kw_only=True)
class Attention(Event):
    """Grad-CAM of a few fixed validation X-rays (one per class) at this evaluation: attention forming."""

    event: ClassVar[str] = "attention"
    step: int
    files: list[str]  # relative to the dataset folder
    classes: list[str]  # the true class of each
    predicted: list[str]  # what the model called each at this step
    maps: list[list[list[float]]]  # [image][row][col] in [0, 1], at ATTENTION_GRID x ATTENTION_GRID

    def to_dict(self, maps: bool = True) -> dict[str, Any]:
        d = super().to_dict()
        if not maps:
            d.pop("maps")
        return d


@dataclass(kw_only=True)
class Note(Event):
    event: ClassVar[str] = "warning"
    message: str


@dataclass(kw_only=True)
class Done(Event):
    event: ClassVar[str] = "done"
    steps: int
    epochs: float
    reason: str  # see REASONS
    train_images_per_sec: float
    best_val_accuracy: float
    best_step: int  # the step whose weights were kept and tested
    test_accuracy: float
    test_loss: float
    test_report: dict[str, Any]  # see cxr.train.evaluate.classification_report
    checkpoint: str  # best weights, scored on the test set ("" when the run ended before its first evaluation)
    last_checkpoint: str  # weights and optimiser state for --resume, kept only when the run did not end normally
    seconds: float  # wall time of the training loop: steps, validation and checkpointing
    seconds_data: float  # reading, decoding and augmenting batches
    seconds_eval: float  # validation during training
    seconds_attention: float  # re-explaining the attention images at each evaluation
    seconds_checkpoint: float  # the loop's part of checkpointing: copying the weights and handing them to the writer
    seconds_test: float  # the final test evaluation, after the loop
    peak_memory_mb: float
    skipped_files: list[str]
    seconds_writing: float = 0.0  # writing those checkpoints to disk, in a thread beside the loop
    calibration: dict[str, Any] = field(default_factory=dict)  # temperature and ECE (cxr.train.calibration), or {}


# Why a run ended, in words for the status line and the CLI.
REASONS = {
    "target": "reached the target accuracy",
    "epochs": "ran all its epochs",
    "max_steps": "reached the step limit",
    "time_budget": "used its time budget",
    "stopped": "stopped by a user",
}
