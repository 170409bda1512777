import json
from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cxr.train.checkpoint import load_checkpoint
from cxr.data.index import DEFAULT_CLASSES, display_name, index_dataset
from cxr.data.cache import ImageCache
from cxr.train.evaluate import classification_report
from cxr.explain.interpret import Interpretation, interpret, interpret_checkpoint, rank_auc

CLASSES = DEFAULT_CLASSES  # covid, normal, viral


class FixedLogits(nn.Module):
    """Returns the next rows of a fixed logits table, one per image, in the order the images arrive."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.seen = logits, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return out


def random_interpretation(n: int = 40, seed: int = 0, decimals: int | None = None) -> Interpretation:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(len(CLASSES)), size=n)
    if decimals is not None:  # coarse probabilities: many ties, which ROC AUC must count as halves
        p = np.round(p, decimals)
    y = rng.integers(0, len(CLASSES), n)
    return Interpretation(CLASSES, [f"img{i}.png" for i in range(n)], y, p, -np.log(np.clip(p[np.arange(n), y], 1e-12, 1)))


def auc_by_counting_pairs(scores, positive) -> float:
    pos, neg = scores[positive], scores[~positive]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def dataset(synthetic_root):
    index = index_dataset(synthetic_root, CLASSES)
    return index, ImageCache(index.files, 16)


def test_top_losses_are_sorted_and_match_cross_entropy_by_hand(dataset):
    index, cache = dataset
    ids = list(range(0, len(index.files), 3))  # every class, across several batches
    torch.manual_seed(0)
    logits = torch.randn(len(ids), len(CLASSES)) * 3
    labels = torch.tensor([index.labels[i] for i in ids])
    model = FixedLogits(logits).train()
    result = interpret(model, cache, ids, index.labels, CLASSES, batch_size=4)
    assert model.training  # the caller's mode is restored
    expected = F.cross_entropy(logits, labels, reduction="none").numpy()
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5)
    top = result.top_losses(5)
    assert [r.loss for r in top] == sorted(result.losses.tolist(), reverse=True)[:5]
    best = result.top_losses(5, largest=False)
    assert [r.loss for r in best] == sorted(result.losses.tolist())[:5]
    worst = int(np.argmax(expected))
    assert top[0].file == str(index.files[ids[worst]]) and top[0].true == CLASSES[labels[worst]]
    assert top[0].predicted == CLASSES[int(logits[worst].argmax())]
    assert top[0].probability == pytest.approx(float(logits[worst].softmax(0).max()))
    assert len(result.top_losses()) == len(ids)


def test_interpret_leaves_out_unreadable_files_and_says_why(dataset, tmp_path):
    index, _ = dataset
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    files = [index.files[0], bad, index.files[1]]
    model = FixedLogits(torch.zeros(2, len(CLASSES)))
    result = interpret(model, ImageCache(files, 16), [0, 1, 2], [0, 0, 1], CLASSES)
    assert result.files == [str(files[0]), str(files[2])] and result.ids == [0, 2]
    assert list(result.skipped) == [str(bad)]


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (2, 1), (3, 0)])
def test_roc_auc_matches_counting_every_positive_negative_pair_with_ties(seed, decimals):
    result = random_interpretation(seed=seed, decimals=decimals)
    auc = result.roc_auc()
    for c, key in enumerate(CLASSES):
        positive = result.y_true == c
        assert auc[key] == pytest.approx(auc_by_counting_pairs(result.probabilities[:, c], positive))


def test_rank_auc_counts_a_tie_as_half():
    assert rank_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert rank_auc(np.array([0.9, 0.1, 0.5]), np.array([True, False, False])) == 1.0


def test_roc_auc_is_none_with_a_reason_when_a_class_has_no_positives():
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    result = Interpretation(CLASSES, ["a", "b", "c"], [0, 1, 0], p, np.zeros(3))
    assert result.roc_auc()["viral"] is None
    assert "no Viral Pneumonia X-rays" in result.roc_auc_missing()["viral"]
    assert "undefined" in result.explanations()["viral"]["roc_auc"]
    assert json.loads(json.dumps(result.to_dict()))["roc_auc"]["viral"] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_most_confused_counts_match_the_confusion_matrix(seed):
    result = random_interpretation(n=60, seed=seed)
    cm = result.confusion_matrix()
    pairs = result.most_confused()
    assert sum(n for _, _, n in pairs) == cm.sum() - np.trace(cm)
    for t, p, n in pairs:
        assert t != p and cm[CLASSES.index(t), CLASSES.index(p)] == n
    assert [n for _, _, n in pairs] == sorted((n for _, _, n in pairs), reverse=True)
    assert all(n >= 5 for _, _, n in result.most_confused(min_count=5))
    t, p, n = pairs[0]
    assert result.confused_sentences()[0] == f"{display_name(t)} called {display_name(p)}: {n} time{'s' if n != 1 else ''}"


def test_confusion_matrix_is_the_one_training_reports():
    result = random_interpretation(n=30)
    report = classification_report(result.y_true.tolist(), result.probabilities.argmax(1).tolist(), CLASSES)
    assert result.confusion_matrix().tolist() == report["confusion_matrix"]
    per_class = result.per_class()
    for key in CLASSES:
        assert {k: v for k, v in per_class[key].items() if k != "roc_auc"} == report["per_class"][key]
        assert per_class[key]["roc_auc"] == result.roc_auc()[key]


def test_cell_returns_exactly_the_images_of_that_cell():
    result = random_interpretation(n=50, seed=4)
    seen = []
    for t, p in product(range(len(CLASSES)), repeat=2):
        cell = result.cell(CLASSES[t], p)  # by key or by index
        expected = {f for f, yt, yp in zip(result.files, result.y_true, result.y_pred) if yt == t and yp == p}
        assert {r.file for r in cell} == expected and len(cell) == result.confusion_matrix()[t, p]
        assert [r.loss for r in cell] == sorted((r.loss for r in cell), reverse=True)
        seen += [r.file for r in cell]
    assert sorted(seen) == sorted(result.files)
    with pytest.raises(ValueError, match="unknown class"):
        result.cell("flu", "covid")


def test_explanations_say_the_counts_in_plain_words():
    # true:      covid x3, normal x2;  predicted: covid, covid, normal, normal, covid
    p = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.3, 0.7, 0], [0.2, 0.8, 0], [0.6, 0.4, 0]])
    result = Interpretation(CLASSES, list("abcde"), [0, 0, 0, 1, 1], p, np.zeros(5))
    words = result.explanations()["covid"]
    assert words["recall"] == "recall for COVID: of the 3 COVID X-rays, it found 2 (67%)"
    assert words["precision"] == "precision for COVID: of the 3 X-rays it called COVID, 2 were COVID (67%)"
    assert "balance of the two" in words["f1"]
    assert "0.5 is guessing, 1.0 perfect" in words["roc_auc"]
    assert "called no X-ray Viral Pneumonia" in result.explanations()["viral"]["precision"]


def test_to_dict_is_json_ready_with_top_losses_and_roc_auc():
    result = random_interpretation(n=20)
    d = json.loads(json.dumps(result.to_dict(top_k=3)))
    assert [set(r) for r in d["top_losses"]] == [{"file", "true", "predicted", "probability", "loss"}] * 3
    assert d["top_losses"][0]["loss"] == pytest.approx(float(result.losses.max()))
    assert set(d["roc_auc"]) == set(CLASSES)


def test_interpretation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="probabilities"):
        Interpretation(CLASSES, ["a", "b"], [0, 1], np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="0..2"):
        Interpretation(CLASSES, ["a"], [3], np.ones((1, 3)) / 3, np.zeros(1))


def test_interpret_checkpoint_agrees_with_the_checkpoints_saved_test_report(trained_checkpoint, synthetic_root):
    ckpt = load_checkpoint(trained_checkpoint)
    result = interpret_checkpoint(ckpt, synthetic_root)
    saved = ckpt.metrics["test"]
    assert len(result) == saved["count"]
    assert result.confusion_matrix().tolist() == saved["confusion_matrix"]
    assert result.accuracy == pytest.approx(ckpt.metrics["test_accuracy"])
    assert float(result.losses.mean()) == pytest.approx(ckpt.metrics["test_loss"], rel=1e-4)
