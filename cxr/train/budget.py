"""The run's budget of steps and seconds: the one place that decides how far through a run is, how long is left,
when it must stop and when it evaluates.

A run ends after `total_steps` steps or, with `time_budget_s`, once its seconds are spent; whichever comes first
drives the learning-rate schedule (`progress`) and the ETA. Under a time budget some seconds are held back for the
final validation and the test, measured at the latest validation. A resumed run counts the seconds its first part
trained (`prior_seconds`), so its schedule and budget go on where they stopped. `seconds_to_evaluation` applies the
same evaluation rule from outside the run (the app's "first model in about ..." sentence). The clock is a parameter
(`now`), so every rule can be checked on a fake one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from cxr.train.config import TrainConfig

# A run under a time budget evaluates about this many times at least, whatever `eval_every` says.
MIN_EVALUATIONS = 8
# The final validation and test take about this many validations' time (times the test set's size over the
# validation set's): that much of a time budget is kept for them.
TEST_RESERVE = 2.5


@dataclass
class Budget:
    """Steps and seconds: progress, ETA, the stop and the evaluation cadence of one run."""

    total_steps: int
    eval_every: int
    time_budget_s: float = 0.0  # 0: no time limit
    start_step: int = 0  # a resumed run's first step
    prior_seconds: float = 0.0  # seconds a resumed run had already trained
    test_per_val: float = 1.0  # test images per validation image: how much longer the test takes than a validation
    end_reason: str = "epochs"  # what the step limit is called in Done ("max_steps" when --max-steps set it)
    now: Callable[[], float] = time.perf_counter
    started: float | None = None  # when the run began (before its set-up); None: now
    last_validation_s: float = field(default=0.0, init=False)  # how long the latest validation took
    _eval_step: int = field(default=0, init=False)  # the step of the previous evaluation (or the start)
    _eval_began: float = field(default=0.0, init=False)  # when it began (or when training began)
    _eval_took: float = field(default=0.0, init=False)  # how long it took

    def __post_init__(self) -> None:
        self.started = self.now() if self.started is None else self.started
        self._eval_step, self._eval_began = self.start_step, self.now()

    def elapsed(self) -> float:
        """Seconds since this process's part of the run began."""
        return self.now() - (self.started or 0.0)

    def run_seconds(self) -> float:
        """Seconds the run has trained, a resumed run's earlier part included (what the budget counts)."""
        return self.prior_seconds + self.elapsed()

    def training_seconds(self) -> float:
        """Of the time budget, what training may use: the rest is kept for the final validation and the test."""
        return self.time_budget_s - TEST_RESERVE * self.last_validation_s * max(self.test_per_val, 1.0)

    def progress(self, step: int) -> float:
        """How far through the run `step` is, 0 to 1: by steps, or by time under a budget, whichever is further.
        Both count from the run's start, so a resumed run picks up its learning-rate schedule where it stopped."""
        by_steps = step / max(self.total_steps, 1)
        by_time = self.run_seconds() / max(self.training_seconds(), 1e-9) if self.time_budget_s else 0.0
        return max(by_steps, by_time)

    def eta(self, step: int) -> float:
        """Seconds left: the steps to go at this process's pace so far, or what is left of the budget if shorter."""
        eta = (self.total_steps - step) * self.elapsed() / max(step - self.start_step, 1)
        if self.time_budget_s:
            eta = min(eta, max(self.time_budget_s - self.run_seconds(), 0.0))
        return eta

    def stop_reason(self, step: int) -> str:
        """Why the run must end before taking step `step + 1` (the steps or the seconds are spent), or ""."""
        if step >= self.total_steps:
            return self.end_reason
        if self.time_budget_s and self.run_seconds() >= self.training_seconds():
            return "time_budget"
        return ""

    def evaluation_due(self, step: int) -> bool:
        """Every `eval_every` steps and at the last step. Under a time budget, counted from the previous evaluation:
        `eval_every` steps since, or a `MIN_EVALUATIONS`th of the budget in seconds since it began, whichever comes
        first, so that a short run (a 40 s demonstration) still draws a curve and saves a model before its end. The
        time rule also waits for at least twice as long as the previous evaluation took, so that on a slow or busy
        machine evaluating never takes over the run."""
        if step == self.total_steps:
            return True
        if not self.time_budget_s:
            return step % self.eval_every == 0
        since = self.now() - self._eval_began
        return (step - self._eval_step >= self.eval_every
                or (since >= self.time_budget_s / MIN_EVALUATIONS and since >= 2 * self._eval_took))

    def validated(self, seconds: float) -> None:
        """A validation took `seconds`: the final test is kept about that long per validation's worth of images."""
        self.last_validation_s = seconds

    def evaluated(self, step: int, began: float) -> None:
        """The evaluation at `step`, which began at `began`, is over: the cadence counts from it."""
        self._eval_step, self._eval_began, self._eval_took = step, began, self.now() - began


def seconds_to_evaluation(cfg: TrainConfig, steps_since: int, seconds_since: float, steps_per_second: float) -> float:
    """About how long until `Budget.evaluation_due` says yes, `steps_since` steps and `seconds_since` seconds after the
    previous evaluation (or the start) at this pace: how long until a run's first model, for a page that waits."""
    by_steps = (cfg.eval_every - steps_since) / steps_per_second if steps_per_second > 0 else math.inf
    if not cfg.time_budget_s:
        return by_steps
    return max(0.0, min(by_steps, cfg.time_budget_s / MIN_EVALUATIONS - seconds_since))
