"""The run's budget decides progress, ETA, the stop and the evaluation cadence: checked on a fake clock."""

import math

import pytest

from cxr.train.budget import MIN_EVALUATIONS, Budget, seconds_to_evaluation
from cxr.train.config import TrainConfig


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _budget(clock, **kwargs):
    return Budget(**{"total_steps": 1000, "eval_every": 40, "now": clock, **kwargs})


def test_without_a_time_budget_evaluations_come_every_n_steps_and_at_the_last():
    clock = FakeClock()
    budget = _budget(clock)
    clock.advance(30.0)  # time alone never calls for one
    assert budget.evaluation_due(80) and budget.evaluation_due(1000)
    assert not budget.evaluation_due(81) and not budget.evaluation_due(999)


def test_under_a_time_budget_evaluations_also_come_by_time():
    clock = FakeClock()
    budget = _budget(clock, time_budget_s=170.0)
    budget.evaluated(80, clock())
    assert not budget.evaluation_due(81)
    clock.advance(170.0 / MIN_EVALUATIONS)  # 21 s: an eighth of the budget since the previous evaluation began
    assert budget.evaluation_due(81)


def test_under_a_time_budget_steps_count_from_the_previous_evaluation():
    clock = FakeClock()
    budget = _budget(clock, time_budget_s=170.0)
    budget.evaluated(39, clock())  # one by time at step 39 is not followed by another at step 40
    assert not budget.evaluation_due(40)
    assert budget.evaluation_due(79)


def test_a_slow_evaluation_delays_the_next_one_by_time_so_evaluating_never_takes_over():
    clock = FakeClock()
    budget = _budget(clock, time_budget_s=170.0)
    began = clock()
    clock.advance(20.0)  # a busy machine: the evaluation took 20 s
    budget.evaluated(50, began)
    clock.advance(10.0)  # 30 s since it began: past an eighth of the budget, but not twice its length
    assert not budget.evaluation_due(60)
    clock.advance(11.0)
    assert budget.evaluation_due(60)


def test_the_step_limit_ends_the_run_under_the_name_it_was_set_by():
    clock = FakeClock()
    assert _budget(clock, end_reason="max_steps").stop_reason(1000) == "max_steps"
    assert _budget(clock).stop_reason(1000) == "epochs" and _budget(clock).stop_reason(999) == ""


def test_a_time_budget_keeps_time_for_the_final_validation_and_test():
    clock = FakeClock()
    budget = _budget(clock, time_budget_s=100.0, test_per_val=3.0)
    budget.validated(2.0)  # the test set is 3 validations long: 2.5 x 2 s x 3 = 15 s are kept for the end
    assert budget.training_seconds() == pytest.approx(85.0)
    clock.advance(84.0)
    assert budget.stop_reason(10) == ""
    clock.advance(1.0)
    assert budget.stop_reason(10) == "time_budget"


def test_progress_is_by_steps_or_by_time_whichever_is_further():
    clock = FakeClock()
    budget = _budget(clock, total_steps=100, time_budget_s=100.0)
    clock.advance(10.0)
    assert budget.progress(50) == pytest.approx(0.5)  # 50 of 100 steps beats 10 of 100 s
    clock.advance(60.0)
    assert budget.progress(50) == pytest.approx(0.7)  # 70 of 100 s beats 50 of 100 steps
    assert _budget(clock, total_steps=100).progress(25) == pytest.approx(0.25)  # no budget: steps alone


def test_eta_is_the_steps_left_at_this_pace_or_the_budget_left_if_shorter():
    clock = FakeClock()
    budget = _budget(clock, total_steps=100)
    clock.advance(10.0)
    assert budget.eta(10) == pytest.approx(90.0)  # 1 s a step, 90 steps to go
    timed = _budget(clock, total_steps=100, time_budget_s=30.0, started=clock() - 10.0)
    assert timed.eta(10) == pytest.approx(20.0)  # 20 s of the budget left
    clock.advance(100.0)
    assert timed.eta(10) == 0.0  # never negative


def test_a_resumed_run_goes_on_with_its_schedule_and_what_is_left_of_its_budget():
    clock = FakeClock()
    budget = _budget(clock, total_steps=40, time_budget_s=100.0, start_step=20)
    assert budget.progress(20) == pytest.approx(0.5)  # step 20 of 40: not the warm-up again
    budget = _budget(clock, total_steps=40, time_budget_s=100.0, start_step=20, prior_seconds=60.0)
    assert budget.progress(20) == pytest.approx(0.6)  # 60 s of a 100 s budget already trained
    assert budget.stop_reason(21) == ""
    clock.advance(40.5)
    assert budget.stop_reason(21) == "time_budget"  # the budget is the run's, not each process's
    assert budget.run_seconds() == pytest.approx(100.5) and budget.elapsed() == pytest.approx(40.5)


def test_the_wait_for_an_evaluation_follows_the_same_rule():
    budget = TrainConfig(eval_every=40, time_budget_s=40)  # by time every 5 s
    assert seconds_to_evaluation(TrainConfig(eval_every=40), 10, 3.0, 2.0) == 15.0  # 30 steps at 2 steps/s
    assert seconds_to_evaluation(budget, 10, 3.0, 2.0) == 2.0  # 5 s by time comes first
    assert seconds_to_evaluation(budget, 10, 9.0, 2.0) == 0.0
    assert seconds_to_evaluation(TrainConfig(eval_every=40), 0, 0.0, 0.0) == math.inf  # no pace yet
