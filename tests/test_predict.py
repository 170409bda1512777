"""Inference, and the one end-to-end test: train a few steps, save, load, predict, explain."""

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.train.checkpoint import load_checkpoint
from cxr.explain.maps import gradcam, overlay
from cxr.predict import Classifier
from cxr.train.events import Done
from cxr.train.loop import fit
from tests import imagefiles
from tests.conftest import tiny_config


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5, 10.0])
def test_probabilities_are_the_logits_divided_by_the_fitted_temperature(trained_checkpoint, synthetic_root,
                                                                         temperature):
    ckpt = load_checkpoint(trained_checkpoint)
    ckpt.calibration = {"temperature": temperature}
    clf = Classifier(ckpt)
    image = synthetic_root / "Normal" / "images" / "Normal-2.png"
    logits = clf.logits(clf.model_input(clf.read(image)))[0]
    expected = (logits / temperature).softmax(0).tolist()
    for explain in (False, True):
        pred = clf.predict(image, explain=explain)
        assert list(pred.probabilities.values()) == pytest.approx(expected, abs=1e-5)
        assert pred.label == clf.classes[int(logits.argmax())]  # scaling never changes the answer
    [(probs, _, _)] = clf.explain_batch([clf.model_input(clf.read(image))], [None])
    assert probs == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_end_to_end_train_save_load_predict_explain(synthetic_root, tmp_path):
    done = list(fit(tiny_config(synthetic_root, tmp_path / "e2e.pt", max_steps=4)))[-1]
    assert isinstance(done, Done)
    clf = Classifier(load_checkpoint(done.checkpoint))
    image = synthetic_root / "Viral Pneumonia" / "images" / "Viral Pneumonia-1.png"
    pred = clf.predict(image, explain=True)
    assert pred.label in clf.classes and pred.target == pred.label
    assert sum(pred.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert pred.heatmap.shape == (64, 64) and 0 <= pred.heatmap.min() and pred.heatmap.max() <= 1
    shown = overlay(pred.image, pred.heatmap, alpha=0.5)
    assert shown.shape == (*np.asarray(pred.image).shape, 3)


def test_prediction_matches_with_and_without_explanation(trained_checkpoint, synthetic_root):
    clf = Classifier(trained_checkpoint)
    image = synthetic_root / "COVID" / "images" / "COVID-3.png"
    plain, explained = clf.predict(image), clf.predict(image, explain=True)
    assert plain.heatmap is None and plain.target is None
    for k in clf.classes:
        assert plain.probabilities[k] == pytest.approx(explained.probabilities[k], abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(imagefiles.READABLE))
def test_every_readable_format_gets_a_prediction(trained_checkpoint, tmp_path, kind):
    writer, name = imagefiles.READABLE[kind]
    pred = Classifier(trained_checkpoint).predict(writer(tmp_path / name), explain=True)
    assert pred.label in ("covid", "normal", "viral") and sum(pred.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert pred.image.mode == "L" and np.asarray(pred.image).std() > 0  # decoded to real content, not a blank
    assert pred.heatmap.shape == (64, 64) and 0 <= pred.heatmap.min() <= pred.heatmap.max() <= 1


def test_target_class_can_be_chosen(trained_checkpoint, synthetic_root):
    clf = Classifier(trained_checkpoint)
    image = synthetic_root / "Normal" / "images" / "Normal-2.png"
    assert clf.predict(image, explain=True, target="viral").target == "viral"
    with pytest.raises(ValueError, match="unknown target class"):
        clf.predict(image, explain=True, target="lung_opacity")


def test_pil_images_and_bytes_are_accepted(trained_checkpoint, synthetic_root):
    clf = Classifier(trained_checkpoint)
    path = synthetic_root / "Normal" / "images" / "Normal-2.png"
    a = clf.predict(path).probabilities
    b = clf.predict(Image.open(path)).probabilities
    c = clf.predict(path.read_bytes()).probabilities
    assert a == pytest.approx(b) and a == pytest.approx(c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_give_the_eager_models_answers(trained_checkpoint, synthetic_root):
    """On CUDA a prediction and a Grad-CAM replay captured graphs; they must give what the model computes eagerly,
    for the predicted class and for a class asked for, on the capturing call and on later replays."""
    clf = Classifier(trained_checkpoint, "cuda")
    files = sorted((synthetic_root / "COVID" / "images").iterdir())[:2] + [synthetic_root / "Normal" / "images" / "Normal-2.png"]
    for image in files + files:  # the first pass captures, the second replays
        for target in (None, "viral"):
            pred = clf.predict(image, explain=True, target=target)
            t = None if target is None else clf.classes.index(target)
            maps, logits = gradcam(clf.model, clf.model_input(pred.image), target=t)
            assert np.allclose(pred.heatmap, maps[0], atol=1e-4)
            assert list(pred.probabilities.values()) == pytest.approx(logits.softmax(1)[0].tolist(), abs=1e-5)
        plain = clf.predict(image)
        assert plain.probabilities == pytest.approx(pred.probabilities, abs=1e-5)
    assert {k[:-1] for k in clf._graphs} == {("logits",), ("gradcam", None), ("gradcam", clf.classes.index("viral"))}
    assert all(g is not None for g in clf._graphs.values())  # every capture worked: nothing fell back to eager


class _FakeGraph:
    """Stands in for CudaGraphCall on a CPU: runs the function, counts captures, fails on request."""

    made: list[tuple] = []
    fail = False

    def __init__(self, fn, example, model):
        if _FakeGraph.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        fn(example)  # the real one warms up, so a bad call fails here
        self.fn = fn
        _FakeGraph.made.append(tuple(example.shape))

    def __call__(self, x):
        return self.fn(x)


def test_graphs_are_kept_per_call_target_and_shape_and_a_failed_capture_runs_eagerly(trained_checkpoint, monkeypatch):
    import gc
    import weakref

    import cxr.predict

    monkeypatch.setattr(cxr.predict, "CudaGraphCall", _FakeGraph)
    monkeypatch.setattr(_FakeGraph, "made", [])
    clf = Classifier(trained_checkpoint)
    clf.device = torch.device("cuda")  # the graph bookkeeping only; the tensors stay on the CPU
    one, four = torch.randn(1, 3, 64, 64), torch.randn(4, 3, 64, 64)
    for _ in range(2):
        clf.gradcam(one), clf.gradcam(one, 2), clf.gradcam(one, np.int64(2)), clf.gradcam(four), clf.logits(one)
    assert _FakeGraph.made == [(1, 3, 64, 64)] * 2 + [(4, 3, 64, 64), (1, 3, 64, 64)]
    assert set(clf._graphs) == {("gradcam", None, (1, 3, 64, 64)), ("gradcam", 2, (1, 3, 64, 64)),
                                ("gradcam", None, (4, 3, 64, 64)), ("logits", (1, 3, 64, 64))}
    with pytest.raises(ValueError, match="target must be a class index"):
        clf.gradcam(one, 7)  # refused, and nothing kept for it
    assert len(clf._graphs) == 4
    monkeypatch.setattr(_FakeGraph, "fail", True)
    maps, logits = clf.gradcam(one, 0)  # the capture fails: the same answer, computed without a graph
    assert clf._graphs[("gradcam", 0, (1, 3, 64, 64))] is None
    assert np.allclose(maps, gradcam(clf.model, one, target=0)[0]) and len(_FakeGraph.made) == 4

    monkeypatch.setattr(_FakeGraph, "fail", False)
    other = Classifier(trained_checkpoint)  # freed as soon as it is dropped: its graphs do not point back at it
    other.device = torch.device("cuda")
    other.gradcam(one), other.logits(one)
    gone = weakref.ref(other)
    gc.disable()
    try:
        del other
        assert gone() is None, "the graphs hold their Classifier in a reference cycle"
    finally:
        gc.enable()
