"""The reliability diagram (cxr.explain.reliability), drawn from what `measure_calibration` returns."""

import numpy as np
import pytest
import torch

from cxr.explain.interpret import Interpretation
from cxr.explain.reliability import calibrated, calibration_sentences, reliability_figure
from cxr.train.calibration import apply_temperature, log_of, measure_calibration


@pytest.fixture(scope="module")
def measured() -> dict:
    probs = torch.tensor([[0.95, 0.03, 0.02]] * 20 + [[0.6, 0.3, 0.1]] * 10, dtype=torch.float64)
    labels = [0] * 12 + [1] * 8 + [0] * 6 + [2] * 4  # says 95 %, right 60 %; says 60 %, right 60 %
    return measure_calibration(probs.numpy(), labels, 2.0)


def test_bars_are_the_accuracy_of_each_filled_bin_and_titles_carry_the_ece(measured):
    fig = reliability_figure(measured)
    before, after = fig.axes[:2]
    assert before.get_title() == f"Before: the network's own percentages\nECE {measured['ece']['before']:.3f}"
    assert after.get_title() == f"After: divided by T = 2.00\nECE {measured['ece']['after']:.3f}"
    heights = sorted(round(p.get_height(), 6) for p in before.containers[0].patches)
    assert heights == [0.6, 0.6]  # two filled bins, each right 60 % of the time
    diagonal = [line for line in before.get_lines() if line.get_linestyle() == "--"]
    assert len(diagonal) == 1 and np.allclose(diagonal[0].get_xydata(), [[0, 0], [1, 1]])


def test_a_model_without_temperature_says_so_in_the_title(measured):
    same = {**measured, "temperature": 1.0}
    assert reliability_figure(same).axes[1].get_title().startswith("After: no temperature fitted (T = 1)")


def test_sentences_name_the_fullest_bin_on_each_side(measured):
    said = calibration_sentences(measured)
    assert said["before"] == "when it says about 95 %, it is right 60 % of the time (20 X-rays)"
    assert said["after"].startswith("when it says about") and said["after"] != said["before"]


def test_a_record_without_bins_is_a_value_error():
    with pytest.raises(ValueError, match="no reliability bins"):
        reliability_figure({"temperature": 1.0, "ece": {"before": 0, "after": 0}})


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_calibrated_interpretation_keeps_the_calls_and_recomputes_the_losses(temperature):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=40)
    labels = rng.integers(0, 3, size=40)
    raw = Interpretation(classes=("covid", "normal", "viral"), files=[f"{i}.png" for i in range(40)], y_true=labels,
                         probabilities=probs, losses=-np.log(probs[np.arange(40), labels]))
    scaled = calibrated(raw, temperature)
    assert np.array_equal(scaled.y_pred, raw.y_pred) and scaled.report == raw.report
    expected = apply_temperature(log_of(probs), temperature).double().numpy()
    assert np.allclose(scaled.probabilities, expected, atol=1e-6)
    assert np.allclose(scaled.losses, -np.log(expected[np.arange(40), labels]), atol=1e-5)
    assert np.array_equal(raw.probabilities, probs)  # the raw interpretation is left as it was
    assert calibrated(raw, 1.0) is raw
