import pytest
import torch

from cxr.train.evaluate import classification_report, evaluate
from cxr.train.model import build_model


def test_report_numbers_on_a_worked_example():
    # true:      a a a b b c
    # predicted: a a b b c c
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (report["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert report["macro"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert report["classes"] == ["a", "b", "c"] and report["count"] == 6


def test_report_handles_a_class_never_predicted():
    report = classification_report([0, 1], [0, 0], ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_report_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="0..1"):
        classification_report([0, 2], [0, 1], ["a", "b"])


def test_evaluate_scores_batches_and_restores_train_mode():
    torch.manual_seed(0)
    model, _ = build_model(3, "none")
    model.train()
    batches = [(torch.randint(0, 255, (4, 1, 32, 32), dtype=torch.uint8), torch.tensor([0, 1, 2, 0]))] * 2
    result = evaluate(model, batches)
    assert model.training
    assert result.count == 8 and 0 <= result.accuracy <= 1 and result.loss > 0
    assert result.probabilities.shape == (8, 3)
    assert torch.allclose(result.probabilities.sum(1), torch.ones(8))


def test_evaluate_with_nothing_readable_is_a_clear_error():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(build_model(3, "none")[0], [])
