import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image

from cxr.explain import gradcam, overlay
from cxr.model import build_model


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


def test_gradcam_matches_captum_on_the_full_model():
    """Running the trunk without gradients is only a speed-up: the map equals plain LayerGradCam's."""
    model = _model()
    x = torch.randn(2, 3, 96, 96)
    ours, logits = gradcam(model, x, target=1)
    ref = LayerGradCam(model, model.layer4[-1]).attribute(x, target=1, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (96, 96), interpolate_mode="bilinear")[:, 0]
    ref = (ref / ref.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).detach().numpy()
    assert np.allclose(ours, ref, atol=1e-4)
    assert torch.allclose(logits, model(x), atol=1e-4)


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


def test_gradcam_puts_the_model_in_eval_mode():
    model = _model().train()
    gradcam(model, torch.randn(1, 3, 64, 64))
    assert not model.training


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
