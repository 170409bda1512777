import math

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image

from cxr.train.checkpoint import load_checkpoint
from cxr.data.index import index_dataset
from cxr.data.cache import ImageCache
from cxr.explain.sanity import compare_maps, randomized_copy, sanity_words
from cxr.explain.maps import (
    METHODS,
    FINE_GRID,
    MIN_GRID,
    cam_raw,
    draw_outline,
    estimate_seconds,
    explain,
    gradcam,
    map_grid,
    map_stage,
    overlay,
    stage_grid,
    timed_explain,
)
from cxr.data.lungs import lung_outline
from cxr.train.model import build_model
from cxr.data.transforms import to_model_input


def _model(num_classes=3, seed=0):
    torch.manual_seed(seed)
    model, _ = build_model(num_classes, "none")
    return model.eval()


def _hooks(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


@pytest.mark.parametrize("size", [64, 96, 224])
@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_gradcam_is_in_unit_range_at_input_size(size, num_classes):
    model = _model(num_classes)
    x = torch.randn(2, 3, size, size)
    maps, logits = gradcam(model, x)
    assert maps.shape == (2, size, size) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert logits.shape == (2, num_classes)


@pytest.mark.parametrize("size", [64, 112])
def test_gradcam_matches_captum_on_the_full_model(size):
    """Running the trunk without gradients is only a speed-up: the map equals plain LayerGradCam's at the stage
    chosen for the input size."""
    model = _model()
    x = torch.randn(2, 3, size, size)
    ours, logits = gradcam(model, x, target=1)
    ref = LayerGradCam(model, getattr(model, map_stage(size))[-1]).attribute(x, target=1, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (size, size), interpolate_mode="bilinear")[:, 0]
    ref = (ref / ref.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).detach().numpy()
    assert np.allclose(ours, ref, atol=1e-4)
    assert torch.allclose(logits, model(x), atol=1e-4)


@pytest.mark.parametrize("size", [64, 80, 96, 112, 224])
def test_the_default_map_has_at_least_seven_cells_per_side(size):
    """At every size the app trains at, Grad-CAM weighs feature maps of `map_grid` cells a side, never fewer than
    MIN_GRID (layer4 alone has 2 x 2 at 64 px and 4 x 4 at 112)."""
    model = _model()
    grids = []
    block = getattr(model, map_stage(size))[-1]
    hook = block.register_forward_hook(lambda m, i, out: grids.append(tuple(out.shape[-2:])))
    try:
        maps, _ = gradcam(model, torch.randn(1, 3, size, size))
    finally:
        hook.remove()
    assert grids == [(map_grid(size), map_grid(size))] and map_grid(size) >= MIN_GRID == 7
    assert maps.shape == (1, size, size)


def test_the_map_grid_follows_resnet18s_halvings_at_every_app_size():
    model = _model().eval()
    seen = {}
    hooks = [getattr(model, s).register_forward_hook(lambda m, i, out, s=s: seen.__setitem__(s, out.shape[-1]))
             for s in ("layer2", "layer3", "layer4")]
    for size in range(56, 225, 8):
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
        assert {s: stage_grid(size, s) for s in seen} == seen, size
        # The deepest stage that is fine enough, no finer: FINE_GRID where a stage down to layer2 has it.
        assert map_grid(size) >= MIN_GRID and (map_grid(size) >= FINE_GRID) == (stage_grid(size, "layer2") >= FINE_GRID)
        assert map_stage(size) != "layer1" and stage_grid(size, "layer4") < FINE_GRID
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("kwargs, message", [({"stages": ("layer5",)}, "stages must be"),
                                             ({"stages": ("layer4", "layer3"), "rule": "layer-cam"}, "shallowest first"),
                                             ({"stages": ("layer3", "layer4")}, "one stage"),
                                             ({"rule": "cam++"}, "unknown CAM rule")])
def test_bad_cam_settings_are_refused_in_a_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cam_raw(_model(), torch.randn(1, 3, 64, 64), **kwargs)
    with pytest.raises(ValueError, match="whole number of pixels"):
        map_grid(0)


def test_layer_cam_is_positive_gradient_times_activation_summed_over_channels():
    """Layer-CAM (Jiang et al. 2021) from Captum equals its definition, computed by hand on the full model."""
    model = _model(seed=2)
    x = torch.randn(2, 3, 112, 112)
    ours, _, _ = cam_raw(model, x, target=0, stages=("layer3",), rule="layer-cam")
    kept = []
    hook = model.layer3[-1].register_forward_hook(lambda m, i, out: kept.append(out))
    try:
        score = model(x)[:, 0].sum()
    finally:
        hook.remove()
    act = kept[0]
    (grad,) = torch.autograd.grad(score, act)
    ref = (grad.clamp_min(0) * act).sum(1, keepdim=True)
    ref = LayerAttribution.interpolate(ref, (112, 112), interpolate_mode="bilinear")[:, 0]
    assert torch.allclose(ours, ref.detach(), atol=1e-5 * float(ref.detach().abs().max()))
    fused, _, _ = cam_raw(model, x, target=0, stages=("layer3", "layer4"), rule="layer-cam")
    assert fused.shape == (2, 112, 112) and fused.max() <= 1 + 1e-6 and not torch.allclose(fused, ours / ours.max())


def test_an_empty_grad_cam_map_falls_back_to_the_stages_layer_cam(monkeypatch):
    """Where Grad-CAM finds no positive evidence anywhere (its weighted sum is negative everywhere), that image gets
    the same stage's Layer-CAM, so Classify never shows a blank overlay; the other images keep their Grad-CAM."""
    import cxr.explain.maps as maps

    model, x = _model(seed=4), torch.randn(2, 3, 112, 112)
    grad_cam, _, _ = cam_raw(model, x, target=0, stages=("layer2",))
    layer_cam, _, _ = cam_raw(model, x, target=0, stages=("layer2",), rule="layer-cam")
    plain = maps.LayerGradCam.attribute

    def first_empty(self, *args, **kwargs):
        out = plain(self, *args, **kwargs)
        out[0] = 0  # as if the first image's weighted sum were negative everywhere
        return out

    monkeypatch.setattr(maps.LayerGradCam, "attribute", first_empty)
    mixed, _, _ = cam_raw(model, x, target=0, stages=("layer2",))
    assert layer_cam[0].max() > 0 and torch.allclose(mixed[0], layer_cam[0], atol=1e-6)
    assert torch.allclose(mixed[1], grad_cam[1], atol=1e-6)


def test_default_target_is_the_predicted_class():
    model = _model(seed=3)
    x = torch.randn(1, 3, 64, 64)
    predicted = int(model(x).argmax(1))
    assert np.allclose(gradcam(model, x)[0], gradcam(model, x, target=predicted)[0])


def test_different_targets_give_different_maps():
    model = _model(seed=4)
    x = torch.randn(1, 3, 96, 96)
    assert not np.allclose(gradcam(model, x, target=0)[0], gradcam(model, x, target=2)[0])


def test_no_hook_outlives_the_call_and_model_is_unchanged():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert _hooks(model) == 0
    gradcam(model, torch.randn(1, 3, 64, 64))
    assert _hooks(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("mode", ["train", "eval", "train with a frozen stem"])
def test_every_method_leaves_the_train_eval_mode_as_it_found_it(method, mode):
    model = _model().train(mode != "eval")
    if mode == "train with a frozen stem":
        model.bn1.eval()  # what set_train_mode does to frozen layers: their batch norm keeps its statistics
    before = [m.training for m in model.modules()]
    running = model.bn1.running_mean.clone()
    explain(model, torch.randn(2, 3, 32, 32), method)
    assert [m.training for m in model.modules()] == before
    assert torch.equal(model.bn1.running_mean, running)  # it ran in eval mode: batch norm learned nothing


@pytest.mark.parametrize("target", [-1, 3, [0]])
def test_bad_target_is_refused(target):
    with pytest.raises(ValueError, match="target"):
        gradcam(_model(), torch.randn(2, 3, 64, 64), target=target)


def test_frozen_weights_still_explain():
    model = _model()
    model.requires_grad_(False)
    maps, _ = gradcam(model, torch.randn(1, 3, 64, 64))
    assert maps.shape == (1, 64, 64)


@pytest.mark.parametrize("shape", [(50, 70), (50, 70, 3)])
def test_overlay_gives_rgb_uint8_at_image_size_and_does_not_mutate(shape):
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    before = image.copy()
    heat = np.random.default_rng(1).random((7, 7)).astype(np.float32)
    out = overlay(image, heat, alpha=0.5)
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8
    assert np.array_equal(image, before)


def test_overlay_alpha_zero_or_empty_map_shows_the_image_unchanged():
    image = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    rgb = np.repeat(image[..., None], 3, axis=2)
    assert np.array_equal(overlay(image, np.ones((8, 8)), alpha=0.0), rgb)
    assert np.array_equal(overlay(Image.fromarray(image), np.zeros((8, 8)), alpha=0.9), rgb)
    assert not np.array_equal(overlay(image, np.ones((8, 8)), alpha=0.9), rgb)


@pytest.mark.parametrize("kwargs, message", [({"alpha": 1.5}, "alpha"), ({"colormap": "nope"}, "colormap")])
def test_overlay_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        overlay(np.zeros((8, 8), np.uint8), np.zeros((8, 8)), **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("size", [32, 64])
def test_each_method_gives_unit_range_maps_at_input_size(method, size):
    model = _model()
    x = torch.randn(2, 3, size, size)
    maps, logits = explain(model, x, method, target=[0, 2])
    assert maps.shape == (2, size, size) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() == 1 or not m.any() for m in maps)  # scaled per image; no evidence stays all zero
    assert torch.allclose(logits, model(x), atol=1e-4)


@pytest.mark.parametrize("method", list(METHODS))
def test_default_target_is_the_predicted_class_for_every_method(method):
    model = _model(seed=3)
    x = torch.randn(1, 3, 32, 32)
    predicted = int(model(x).argmax(1))
    assert np.allclose(explain(model, x, method)[0], explain(model, x, method, target=predicted)[0], atol=1e-5)


@pytest.mark.parametrize("method", list(METHODS))
def test_no_method_leaves_hooks_gradients_or_changed_weights(method):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explain(model, torch.randn(1, 3, 32, 32), method)
    assert _hooks(model) == 0 and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradcam_is_the_registered_gradcam():
    model = _model()
    x = torch.randn(2, 3, 64, 64)
    assert np.array_equal(gradcam(model, x, target=1)[0], explain(model, x, "gradcam", target=1)[0])


def test_unknown_method_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown explanation method 'lime'.*gradcam, integrated_gradients, occlusion"):
        explain(_model(), torch.randn(1, 3, 32, 32), "lime")
    with pytest.raises(ValueError, match="unknown explanation method"):
        estimate_seconds("lime", 0.05, 112)


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_black_pixels_get_no_credit_from_methods_with_a_black_baseline(method):
    """Hidden lungs are black, and so is the baseline: IG gives them exactly nothing, occlusion nothing either
    where a whole patch is already black."""
    images = torch.randint(30, 255, (1, 1, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images[:, :, :, :32] = 0  # the left half is black
    maps, _ = explain(_model(seed=1), to_model_input(images), method)
    black = maps[0, :, :16] if method == "occlusion" else maps[0, :, :32]  # occlusion: patches wholly in black
    # Exactly zero up to float rounding: on an AVX2 CPU the occluded batch and the plain forward pass run different
    # convolution kernels, whose sums differ in the last bits.
    assert np.abs(black).max() < 1e-4 and maps.max() == 1


def test_timed_explain_reports_seconds_and_estimates_scale_with_the_forward_time():
    maps, logits, seconds = timed_explain(_model(), torch.randn(1, 3, 32, 32), "gradcam")
    assert maps.shape == (1, 32, 32) and 0 < seconds < 60
    for name, method in METHODS.items():
        assert estimate_seconds(name, 0.1, 112) == pytest.approx(0.1 * method.forwards[112]) and method.label
        # Between measured sizes the larger size's cost counts; past the largest, the largest's.
        assert estimate_seconds(name, 0.1, 100) == estimate_seconds(name, 0.1, 112)
        assert estimate_seconds(name, 0.1, 512) == estimate_seconds(name, 0.1, 224) > 0
    for size in (64, 112, 224):
        assert estimate_seconds("occlusion", 0.1, size) > estimate_seconds("gradcam", 0.1, size)


def test_randomized_copy_changes_every_weight_and_leaves_the_model_and_random_state_alone():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    clone = randomized_copy(model, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for name, p in clone.named_parameters():
        if name.endswith("weight") and p.dim() > 1:  # conv and linear weights: re-drawn
            assert not torch.equal(p, model.get_parameter(name)), name
    again = randomized_copy(model, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), again.state_dict().values()))


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_randomised_weights_change_the_maps_of_a_trained_model(trained_checkpoint, synthetic_root, method):
    """Adebayo et al.'s sanity check: a map that survives randomising the weights does not explain the model."""
    ckpt = load_checkpoint(trained_checkpoint)
    files = index_dataset(synthetic_root).files[::9][:4]
    x = to_model_input(ImageCache(files, ckpt.image_size).get(range(4))[0])
    trained, _ = explain(ckpt.model, x, method)
    random, _ = explain(randomized_copy(ckpt.model, seed=0), x, method)
    # A map agrees with itself, unless it is empty (no positive evidence: then it has no ranks, NaN). On an AVX2 CPU
    # the six-step model's occlusion maps of these images all come out empty.
    shown = [a for a in trained if np.ptp(a) > 0]
    assert [compare_maps(a, a) for a in shown] == pytest.approx([1.0] * len(shown))
    assert all(math.isnan(compare_maps(a, a)) for a in trained if np.ptp(a) == 0)
    # NaN: the random model's map is empty (no positive evidence), which differs from the trained one's too.
    changed = np.nan_to_num([compare_maps(a, b) for a, b in zip(trained, random)], nan=0.0)
    # A map that ignored the weights would score 1. IG scores about 0.7 here: much of it is image edges, which is
    # the paper's point; Grad-CAM and occlusion fall near 0.
    assert changed.mean() < 0.9 and not np.allclose(trained, random, atol=0.05), changed


@pytest.mark.parametrize("n", [16, 100])
def test_compare_maps_is_a_rank_correlation(n):
    rng = np.random.default_rng(0)
    a = rng.random((n, n))
    assert compare_maps(a, a) == pytest.approx(1.0)
    assert compare_maps(a, a**3 + 2) == pytest.approx(1.0)  # only the order of the pixels counts
    assert compare_maps(a, -a) == pytest.approx(-1.0)
    assert abs(compare_maps(a, rng.random((n, n)))) < 0.2
    assert compare_maps(torch.from_numpy(a), a) == pytest.approx(1.0)


def test_compare_maps_shares_ranks_between_ties():
    """Two maps that are zero in the same places and disagree elsewhere must not look alike because of the zeros'
    order: tied pixels share their mean rank."""
    a = np.array([0, 0, 0, 0, 1, 2, 3, 4], float)
    b = np.array([0, 0, 0, 0, 4, 3, 2, 1], float)
    ranks_a = np.array([1.5, 1.5, 1.5, 1.5, 4, 5, 6, 7])
    ranks_b = np.array([1.5, 1.5, 1.5, 1.5, 7, 6, 5, 4])
    assert compare_maps(a, b) == pytest.approx(np.corrcoef(ranks_a, ranks_b)[0, 1])
    assert math.isnan(compare_maps(np.zeros(8), a))
    with pytest.raises(ValueError, match="same shape"):
        compare_maps(np.zeros((4, 4)), np.zeros((5, 5)))


@pytest.mark.parametrize("shape", [(64, 64), (150, 200)])
def test_outline_is_drawn_on_the_overlay_at_the_region_edge_only(shape):
    image = np.full(shape, 90, np.uint8)
    region = np.zeros((32, 32), bool)
    region[8:24, 4:16] = True
    out = overlay(image, np.zeros((7, 7)), alpha=0.5, outline=region)
    magenta = (out == (255, 0, 255)).all(axis=2)
    grey = (out == 90).all(axis=2)
    assert magenta.any() and (magenta | grey).all()
    big = np.asarray(Image.fromarray(region).resize(shape[::-1], Image.Resampling.NEAREST))
    assert np.array_equal(magenta, lung_outline(big, width=max(1, round(max(shape) / 300))))
    assert np.array_equal(overlay(image, np.zeros((7, 7)), alpha=0.5), np.repeat(image[..., None], 3, 2))


def test_draw_outline_does_not_mutate_and_checks_its_input():
    rgb = np.zeros((20, 20, 3), np.uint8)
    out = draw_outline(rgb, torch.ones(1, 1, 10, 10), color=(0, 255, 0))
    assert not rgb.any() and out[0, 0].tolist() == [0, 255, 0] and out[10, 10].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="2-D"):
        draw_outline(rgb, np.ones((2, 3, 10, 10)))


def test_the_sanity_check_is_said_in_plain_words_and_never_as_nan():
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    empty = np.zeros((16, 16))
    said = {
        "same": sanity_words(a, a**2),
        "unrelated": sanity_words(a, b),
        "trained empty": sanity_words(empty, a),
        "random empty": sanity_words(a, np.full((16, 16), 0.5)),
        "both empty": sanity_words(torch.zeros(16, 16), empty),
    }
    assert all("nan" not in words.lower() and "correlation" not in words for words in said.values()), said
    assert "1.00" in said["same"] and "nearly the same without training" in said["same"]
    assert "different, so this map depends on what the model learned" in said["unrelated"]
    assert said["trained empty"].startswith("this model's map is empty") and said["both empty"] == said["trained empty"]
    assert said["random empty"].startswith("the random-weights model finds no evidence")
