"""The loop's state: which weights a keep policy keeps, and the records the run keeps as it goes."""

import pytest
import torch

from cxr.train.budget import Budget
from cxr.train.evaluate import EvalResult
from cxr.train.state import KEEP_POLICIES, Best, KeepBest, KeepLast, RunState, Timings, Window


def _val(accuracy, loss):
    return EvalResult(loss=loss, accuracy=accuracy, y_true=[], y_pred=[], probabilities=torch.zeros(0, 3))


def _best(accuracy, loss):
    return Best(accuracy=accuracy, loss=loss, step=10, state={})


@pytest.mark.parametrize("accuracy, loss, kept", [
    (0.9, 0.5, True),  # more accurate
    (0.8, 0.3, True),  # as accurate, lower loss
    (0.8, 0.4, False),  # the same
    (0.8, 0.5, False),  # as accurate, higher loss
    (0.7, 0.1, False),  # less accurate, however low its loss
])
def test_keep_best_replaces_the_kept_weights_only_with_a_better_validation(accuracy, loss, kept):
    assert KeepBest().keeps(_val(accuracy, loss), _best(0.8, 0.4)) is kept


def test_keep_last_keeps_every_evaluations_weights_even_worse_ones():
    assert KeepLast().keeps(_val(0.1, 9.0), _best(1.0, 0.0))
    assert isinstance(KEEP_POLICIES["last"], KeepLast) and isinstance(KEEP_POLICIES["best"], KeepBest)


def test_the_first_validation_is_kept_by_either_policy():
    assert all(policy.keeps(_val(0.0, 5.0), Best()) for policy in KEEP_POLICIES.values())


def test_keeping_weights_copies_them_so_training_on_does_not_change_them():
    model = torch.nn.Linear(2, 2)
    best = Best()
    best.take(_val(0.5, 1.0), model, step=3)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(best.state["weight"], model.weight) and (best.accuracy, best.loss, best.step) == (0.5, 1.0, 3)


def test_the_window_averages_loss_per_step_and_accuracy_per_image():
    window = Window()
    window.add(1.0, 3, 4)
    window.add(3.0, 1, 4)
    assert window.point() == (2.0, 0.5) and Window().point() == (0.0, 0.0)


def test_throughput_is_zero_before_any_training_time():
    assert Timings().images_per_sec() == 0.0 and Timings(train=2.0, images=10).images_per_sec() == 5.0


def test_a_run_knows_whether_its_latest_evaluation_scored_the_step_it_reached():
    state = RunState(step=6, budget=Budget(total_steps=10, eval_every=2))
    assert not state.evaluated_last()
    state.history.append({"step": 6})
    assert state.evaluated_last()
    state.step = 7
    assert not state.evaluated_last()
