"""Temperature scaling and calibration error (cxr.train.calibration) on toy logits with known answers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxr.train.calibration import (BINS, MIN_IMAGES, T_RANGE, Calibration, apply_temperature, calibrate,
                                   calibration_words, confidence_words, expected_calibration_error, fit_temperature,
                                   log_of, measure_calibration, reliability_bins)


def sampled(n: int, classes: int = 3, scale: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is the true chance of each label (labels drawn from it), then multiplied by `scale`:
    scale 1 is calibrated by construction, scale > 1 over-confident by that factor."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=gen, dtype=torch.float64) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=gen)[:, 0]
    return logits * scale, labels


def test_fit_lowers_the_nll_of_over_confident_logits_and_finds_their_scale():
    logits, labels = sampled(4000, scale=3.0)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert F.cross_entropy(logits / t, labels) < F.cross_entropy(logits, labels) - 0.1
    assert expected_calibration_error(apply_temperature(logits, t), labels) < expected_calibration_error(
        logits.softmax(1), labels) / 3


def test_fit_sharpens_timid_logits():
    logits, labels = sampled(4000, scale=0.5, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.1)


def test_fit_stays_in_the_sane_range_on_a_set_it_gets_all_right():
    logits = torch.eye(3).repeat(10, 1) * 5  # every image right: the NLL falls forever as T shrinks
    t = fit_temperature(logits, torch.arange(3).repeat(10))
    assert T_RANGE[0] <= t <= T_RANGE[1] and t < 1


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 0.9, 1.0, 1.1, 2.0, 5.0, 20.0])
@pytest.mark.parametrize("classes", [2, 3, 4])
def test_scaling_never_changes_the_predicted_class(temperature, classes):
    logits = torch.randn(500, classes, generator=torch.Generator().manual_seed(classes)) * 4
    scaled = apply_temperature(logits, temperature)
    assert torch.equal(scaled.argmax(1), logits.argmax(1))
    assert torch.allclose(scaled.sum(1), torch.ones(500))


def test_stored_probabilities_rescale_as_the_logits_would():
    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    from_probs = apply_temperature(log_of(logits.softmax(1)), 2.5)
    assert torch.allclose(from_probs, apply_temperature(logits, 2.5), atol=1e-6)


def test_ece_of_a_perfectly_calibrated_toy_case_is_zero():
    # Ten answers at 80 %, eight of them right; ten at 50 %, five right: each bin's accuracy is its confidence.
    probs = torch.tensor([[0.8, 0.1, 0.1]] * 10 + [[0.5, 0.3, 0.2]] * 10, dtype=torch.float64)
    labels = torch.tensor([0] * 8 + [1] * 2 + [0] * 5 + [2] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-9)


def test_ece_of_labels_drawn_from_the_probabilities_is_near_zero():
    logits, labels = sampled(20000, seed=2)
    assert expected_calibration_error(logits.softmax(1), labels) < 0.02


def test_ece_of_an_over_confident_toy_case_is_the_gap():
    probs = torch.tensor([[0.9, 0.05, 0.05]] * 10)  # says 90 %, right half of the time
    labels = torch.tensor([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_reliability_bins_hold_every_image_once_with_certainty_in_the_last():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.34, 0.33, 0.33], [0.6, 0.4, 0.0]])
    bins = reliability_bins(probs, [0, 1, 0], bins=BINS)
    assert len(bins) == BINS and sum(b.count for b in bins) == 3
    assert bins[-1].count == 1 and bins[-1].accuracy == 1.0 and bins[-1].confidence == 1.0
    assert bins[5].count == 1 and bins[5].accuracy == 0.0 and bins[5].confidence == pytest.approx(0.34)
    assert all(b.low < b.high for b in bins) and all(b.confidence == b.accuracy == 0 for b in bins if not b.count)


def test_too_few_images_keep_the_temperature_at_one_and_say_so():
    logits, labels = sampled(MIN_IMAGES - 1, scale=5.0)
    c = calibrate(logits, labels)
    assert c.temperature == 1.0 and c.images == MIN_IMAGES - 1 and "too few" in c.note
    assert c.ece_before == c.ece_after
    assert "none (T = 1)" in calibration_words(c.to_dict())


def test_calibrate_records_what_it_fitted():
    logits, labels = sampled(300, scale=3.0)
    c = calibrate(logits, labels)
    assert c.temperature > 1.5 and c.fitted_on == "validation" and c.images == 300 and not c.note
    assert c.ece_after < c.ece_before
    assert Calibration.from_dict(c.to_dict()) == c
    assert f"T = {c.temperature:.2f}" in calibration_words(c.to_dict())


@pytest.mark.parametrize("stored", [None, {}, "T=2", {"temperature": -1}, {"temperature": float("nan")}])
def test_an_older_or_odd_record_means_no_scaling(stored):
    assert Calibration.from_dict(stored).temperature == 1.0


def test_measure_calibration_reports_both_sides_and_t_one_changes_nothing():
    logits, labels = sampled(200, scale=2.0)
    probs = logits.softmax(1).numpy()
    same = measure_calibration(probs, labels, 1.0)
    assert same["ece"]["before"] == pytest.approx(same["ece"]["after"])
    scaled = measure_calibration(probs, labels, 2.0)
    assert scaled["temperature"] == 2.0 and scaled["ece"]["after"] < scaled["ece"]["before"]
    assert scaled["nll"]["after"] < scaled["nll"]["before"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    assert sum(b["count"] for b in scaled["reliability"]["after"]) == 200
    assert set(scaled["reliability"]["before"][0]) == {"low", "high", "confidence", "accuracy", "count"}


def test_confidence_words_name_the_fullest_bin():
    probs = torch.tensor([[0.9, 0.05, 0.05]] * 10 + [[0.5, 0.3, 0.2]] * 2)
    words = confidence_words(reliability_bins(probs, [0] * 7 + [1] * 3 + [0, 0]))
    assert words == "when it says about 90 %, it is right 70 % of the time (10 X-rays)"


@pytest.mark.parametrize("call", [
    lambda: apply_temperature(torch.zeros(2, 3), 0.0),
    lambda: expected_calibration_error(torch.full((2, 3), 1 / 3), [0]),
    lambda: expected_calibration_error(torch.full((2, 3), 1 / 3), [0, 3]),
    lambda: reliability_bins(torch.full((2, 3), 1 / 3), [0, 1], bins=0),
    lambda: fit_temperature(np.zeros(3), [0, 1, 2]),
    lambda: fit_temperature(torch.zeros(0, 3), []),
])
def test_bad_input_is_a_value_error(call):
    with pytest.raises(ValueError):
        call()
