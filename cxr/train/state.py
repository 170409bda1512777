"""What changes while a run trains, apart from the weights: `RunState` (the step, the budget, the best so far, the
curves, the last save) and the small records it holds, and the keep policies that decide which weights are kept.

`Run` (run.py) is what set-up fixed; everything here is what the loop (loop.py) updates. A keep policy is a small
class: `KeepBest` keeps the best validation so far (by accuracy, then by loss), `KeepLast` the latest weights (a
schedule that anneals to zero ends at its best point).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from cxr.train.budget import Budget
from cxr.train.evaluate import EvalResult
from cxr.train.writer import snapshot


@dataclass
class Timings:
    """Where the run's seconds went and how many images it trained on (Done's breakdown, the throughput)."""

    data: float = 0.0
    train: float = 0.0
    eval: float = 0.0
    attention: float = 0.0
    save: float = 0.0
    images: int = 0

    def images_per_sec(self) -> float:
        return self.images / self.train if self.train else 0.0


@dataclass
class Window:
    """Training loss and accuracy since the previous evaluation: the training curve's next point."""

    loss: float = 0.0
    steps: int = 0
    correct: float = 0.0
    images: int = 0

    def add(self, loss: float, correct: float, images: int) -> None:
        self.loss, self.steps = self.loss + loss, self.steps + 1
        self.correct, self.images = self.correct + correct, self.images + images

    def point(self) -> tuple[float, float]:
        """(mean loss per step, accuracy per image)."""
        return self.loss / max(self.steps, 1), self.correct / max(self.images, 1)


@dataclass
class Best:
    """The validation result of the weights kept so far, and a copy of those weights (None before any)."""

    accuracy: float = -1.0
    loss: float = math.inf
    step: int = 0
    state: dict[str, torch.Tensor] | None = None
    # their whole validation result, logits too (what the temperature is fitted to); None for a resumed run's
    val: EvalResult | None = None

    def take(self, val: EvalResult, model: torch.nn.Module, step: int) -> None:
        """Keep `model`'s weights now (a copy: training goes on changing the model) with their validation result."""
        self.accuracy, self.loss, self.step, self.val = val.accuracy, val.loss, step, val
        self.state = snapshot(model)[0]


class KeepPolicy(Protocol):
    def keeps(self, val: EvalResult, best: Best) -> bool:
        """Whether the weights just validated (`val`) replace the ones kept (`best`)."""
        ...


class KeepBest:
    """Keep the weights of the best validation so far: higher accuracy, or as high with a lower loss."""

    def keeps(self, val: EvalResult, best: Best) -> bool:
        return val.accuracy > best.accuracy or (val.accuracy == best.accuracy and val.loss < best.loss)


class KeepLast:
    """Keep the latest weights: a schedule that anneals to zero ends at its best point."""

    def keeps(self, val: EvalResult, best: Best) -> bool:
        return True


KEEP_POLICIES: dict[str, KeepPolicy] = {"best": KeepBest(), "last": KeepLast()}  # TrainConfig.keep -> policy


@dataclass
class RunState:
    """The run as it goes: the step reached, its budget, the weights kept, the curves and when -last was saved."""

    step: int
    budget: Budget
    best: Best = field(default_factory=Best)
    history: list[dict[str, float]] = field(default_factory=list)  # one point per evaluation (a resumed run's too)
    attention: dict[str, Any] = field(default_factory=dict)  # the attention strip: files, classes, steps, maps
    window: Window = field(default_factory=Window)
    timings: Timings = field(default_factory=Timings)
    last_saved: float = field(default_factory=time.perf_counter)  # when the resumable -last file was last written
    unreadable_batches: int = 0  # batches none of whose files could be read
    reported_bad: int = 0  # unreadable files already reported in a Note

    def evaluated_last(self) -> bool:
        """Whether the latest evaluation scored the weights of the step reached."""
        return bool(self.history) and self.history[-1]["step"] == self.step
