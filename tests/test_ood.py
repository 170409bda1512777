"""The out-of-distribution check (cxr.explain.ood): its fit, its threshold, its place in the checkpoint, and what a
prediction says with it and without it."""

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.explain.ood import OodFit, fit_features, ledoit_wolf, spread
from cxr.predict import Classifier
from cxr.train.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint


def _features(n: int, d: int = 32, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs, one per class, in `d` dimensions."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=gen) * 3
    return centres[labels] + torch.randn(n, d, generator=gen), labels


@pytest.mark.parametrize("n_val", [12, 57, 200])
@pytest.mark.parametrize("d", [8, 512])
def test_threshold_passes_about_95_percent_of_the_validation_images(n_val, d):
    train, labels = _features(300, d)
    val, _ = _features(n_val, d, seed=1)
    fit = fit_features(train, labels, val)
    passed = float((fit.score(val) <= 1.0).float().mean())
    # "higher" quantile: never fewer than 95 %, and at most one image more
    assert 0.95 <= passed <= 0.95 + 1 / n_val + 1e-9
    assert fit.pass_rate == pytest.approx(passed) and fit.images == 300 and fit.val_images == n_val


def test_a_class_mean_is_at_distance_zero_and_far_points_are_far():
    train, labels = _features(200)
    fit = fit_features(train, labels, train)
    assert fit.distance(fit.means).abs().max() < 1e-2
    assert (fit.score(train.mean(0, keepdim=True) + 100) > 10).all()


def test_shrinkage_gives_a_symmetric_invertible_covariance_even_with_fewer_images_than_features():
    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(0))
    cov, shrinkage = ledoit_wolf(x - x.mean(0))
    assert 0 < shrinkage <= 1 and torch.allclose(cov, cov.T)
    assert torch.linalg.eigvalsh(cov).min() > 0  # 20 images alone could not make 64 dimensions invertible


def test_spread_takes_evenly_spaced_ids_and_all_of_a_short_list():
    assert spread([5, 6, 7], most=10) == [5, 6, 7]
    picked = spread(list(range(1000)), most=100)
    assert len(picked) == 100 and picked[:3] == [0, 10, 20] and len(set(picked)) == 100


@pytest.mark.parametrize("rate", [0.0, 1.0, 1.5])
def test_a_pass_rate_outside_zero_to_one_is_refused(rate):
    train, labels = _features(30)
    with pytest.raises(ValueError, match="pass_rate"):
        fit_features(train, labels, train, pass_rate=rate)


@pytest.mark.parametrize("saved", [{}, None, {"method": "energy"}, {"method": "mahalanobis", "means": [1.0]},
                                   {"method": "mahalanobis", "means": torch.zeros(3, 4), "precision": torch.eye(4),
                                    "threshold": 0.0}])
def test_a_missing_or_unusable_field_is_no_check(saved):
    assert OodFit.from_dict(saved) is None


def test_the_fit_round_trips_through_a_checkpoint(tmp_path, trained_checkpoint):
    ckpt = load_checkpoint(trained_checkpoint)
    fit = OodFit.from_dict(ckpt.ood)
    assert fit is not None and fit.means.shape == (len(ckpt.classes), 512) and fit.threshold > 0
    path = save_checkpoint(tmp_path / "copy.pt", ckpt.model, ckpt.classes, ckpt.image_size, ckpt.config, ckpt.metrics,
                           ood=fit.to_dict())
    again = OodFit.from_dict(load_checkpoint(path).ood)
    assert torch.equal(again.means, fit.means) and torch.equal(again.precision, fit.precision)
    assert again.threshold == fit.threshold and again.pass_rate == pytest.approx(fit.pass_rate, abs=1e-4)


def test_an_older_checkpoint_has_no_check_and_says_so(tmp_path, trained_checkpoint, synthetic_root):
    raw = read_checkpoint_file(trained_checkpoint)
    del raw["ood"]
    torch.save(raw, tmp_path / "old.pt")
    clf = Classifier(tmp_path / "old.pt")
    assert clf.checkpoint.ood == {} and clf.ood is None
    pred = clf.predict(synthetic_root / "COVID" / "images" / "COVID-1.png", explain=True)
    assert pred.ood_score is None and pred.looks_like_training_data is None


def test_noise_and_flat_images_are_unlike_the_training_data(trained_checkpoint, synthetic_root):
    """A model fitted on tiny synthetic X-rays: its own validation images mostly pass, wildly different ones do not."""
    clf = Classifier(trained_checkpoint)
    xrays = [clf.predict(f) for f in sorted((synthetic_root / "Normal" / "images").glob("*.png"))]
    assert np.mean([p.looks_like_training_data for p in xrays]) >= 0.5
    rng = np.random.default_rng(0)
    strangers = {"noise": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
                 "flat": Image.new("L", (64, 64), 128), "white": Image.new("L", (64, 64), 255)}
    for name, image in strangers.items():
        pred = clf.predict(image)
        assert pred.looks_like_training_data is False and pred.ood_score > 1, name


def test_the_score_is_the_same_with_and_without_grad_cam(trained_checkpoint, synthetic_root):
    clf = Classifier(trained_checkpoint)
    image = synthetic_root / "Viral Pneumonia" / "images" / "Viral Pneumonia-1.png"
    plain, explained = clf.predict(image), clf.predict(image, explain=True)
    assert plain.ood_score is not None and plain.ood_score == pytest.approx(explained.ood_score, rel=1e-4)
