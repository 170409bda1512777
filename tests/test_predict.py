"""Inference, and the one end-to-end test: train a few steps, save, load, predict, explain."""

import numpy as np
import pytest
from PIL import Image

from cxr.checkpoint import load_checkpoint
from cxr.explain import overlay
from cxr.predict import Classifier
from cxr.events import Done
from cxr.train import fit
from tests import imagefiles
from tests.conftest import tiny_config


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
