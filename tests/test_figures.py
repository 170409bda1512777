"""The figures every screen shares: the curves the Train tab draws live and the report saves."""

import pytest

from cxr.explain.figures import CURVE_COLORS, SMOOTH_FROM, curves_figure, smooth


def _history(n: int) -> list[dict]:
    return [{"step": 10 * (i + 1), "train_loss": 1.0 / (i + 1), "train_accuracy": 0.5 + 0.04 * i,
             "val_loss": 1.1 / (i + 1), "val_accuracy": 0.4 + 0.05 * i} for i in range(n)]


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.lines]


def test_a_single_evaluation_is_drawn_as_a_point_and_an_empty_plot_says_so():
    one = curves_figure(_history(1), 100, 0.95)
    assert all(line.get_marker() == "o" for line in one.axes[0].lines)
    assert [line.get_label() for line in one.axes[0].lines][:2] == ["training loss", "validation loss"]
    assert one.axes[0].get_xlim() == one.axes[1].get_xlim()  # one x range for both plots
    empty = curves_figure([], 0, 0.95)
    assert "no evaluation yet" in [t.get_text() for t in empty.axes[0].texts]


def test_the_smoothed_line_waits_for_enough_evaluations_to_follow_them():
    assert "validation accuracy, smoothed" not in _labels(curves_figure(_history(SMOOTH_FROM - 1)).axes[1])
    assert "validation accuracy, smoothed" in _labels(curves_figure(_history(SMOOTH_FROM)).axes[1])


def test_the_target_and_a_compared_run_are_drawn_only_when_given():
    plain = curves_figure(_history(3))
    assert not any(label.startswith("target") for label in _labels(plain.axes[1]))
    full = curves_figure(_history(3), 60, 0.9, ("run A", _history(2)))
    labels = _labels(full.axes[1])
    assert "target 90%" in labels and "validation accuracy: run A" in labels
    compared = full.axes[1].lines[labels.index("validation accuracy: run A")]
    assert compared.get_color() == CURVE_COLORS["compare"] and list(compared.get_xdata()) == [10, 20]


def test_the_x_range_covers_the_whole_run_and_a_compared_one():
    def right(fig):
        return fig.axes[0].get_xlim()[1]
    assert 500 <= right(curves_figure(_history(2), total_steps=500)) < 520
    assert 20 <= right(curves_figure(_history(2), total_steps=0)) < 21
    # a short run compared with a longer one: the longer one's points must be on the chart, not past its edge
    assert right(curves_figure(_history(2), total_steps=20, compare=("long run", _history(9)))) >= 90


def test_a_history_missing_a_metric_draws_what_it_has():
    history = [{"step": 5, "train_loss": 0.9, "val_loss": 1.0, "val_accuracy": 0.5}]  # an older checkpoint's record
    fig = curves_figure(history)
    acc = fig.axes[1].lines[_labels(fig.axes[1]).index("training accuracy")]
    assert len(acc.get_xdata()) == 0 and len(fig.axes[0].lines[0].get_xdata()) == 1


@pytest.mark.parametrize("values", [[0.5], [0.2, 0.8, 0.5, 0.9]])
def test_smoothing_starts_at_the_first_value_and_stays_within_the_range(values):
    out = smooth(values)
    assert len(out) == len(values) and out[0] == values[0]
    assert all(min(values) <= v <= max(values) for v in out)
