"""The events `fit` yields: one small typed record per thing that happened, shared by every consumer.

The CLI prints them (a progress bar, or one JSON object per line with `--json`: `to_dict()` plus an "event" key),
the app plots them, the benchmark times them. The field names are the project's metric names: the same words
appear in JSON keys, table columns and plot axes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class Event:
    event: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, **asdict(self)}


@dataclass
class Started(Event):
    event: ClassVar[str] = "start"
    classes: list[str]
    counts: dict[str, int]  # images per class found on disk
    split: dict[str, int]  # train / val / test sizes
    layout: str
    synthetic: bool
    device: str
    weights: str  # where the starting weights came from
    trainable_params: int
    total_steps: int
    start_step: int


@dataclass
class Step(Event):
    event: ClassVar[str] = "step"
    step: int
    epoch: int
    total_steps: int
    train_loss: float
    train_images_per_sec: float
    eta_s: float


@dataclass
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


@dataclass
class Note(Event):
    event: ClassVar[str] = "warning"
    message: str


@dataclass
class Done(Event):
    event: ClassVar[str] = "done"
    steps: int
    epochs: float
    reason: str  # "target", "epochs", "max_steps" or "stopped"
    train_images_per_sec: float
    best_val_accuracy: float
    test_accuracy: float
    test_loss: float
    test_report: dict[str, Any]  # see cxr.evaluate.classification_report
    checkpoint: str  # best weights, scored on the test set
    last_checkpoint: str
    seconds: float  # wall time of the training loop: steps, validation and checkpoint writes
    seconds_data: float  # reading, decoding and augmenting batches
    seconds_eval: float  # validation during training
    seconds_checkpoint: float  # writing checkpoints during training
    seconds_test: float  # the final test evaluation, after the loop
    peak_memory_mb: float
    skipped_files: list[str]
