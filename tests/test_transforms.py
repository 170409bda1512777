import numpy as np
import pytest
import torch
from PIL import Image

from cxr.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    augment,
    denormalize,
    prepare_image,
    to_display,
    to_model_input,
)


def _batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("size", [32, 64, 224])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_prepare_image_gives_uint8_square_single_channel(size, mode):
    img = Image.new(mode, (300, 200), 100 if mode == "L" else (100, 100, 100))
    out = prepare_image(img, size)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (1, size, size)


@pytest.mark.parametrize("size", [32, 96])
def test_to_model_input_is_normalised_three_channels(size):
    batch = _batch(3, size)
    x = to_model_input(batch)
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 3, size, size)
    # each channel is the same gray image, normalised with that channel's ImageNet statistics
    gray = batch.float() / 255
    for c in range(3):
        assert torch.allclose(x[:, c : c + 1], (gray - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-6)


def test_to_model_input_does_not_mutate_its_input():
    batch = _batch()
    before = batch.clone()
    to_model_input(batch, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(batch, before)


def test_to_model_input_rejects_float_or_rgb_batches():
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_denormalize_inverts_normalisation():
    batch = _batch()
    back = denormalize(to_model_input(batch))
    assert torch.allclose(back, (batch.float() / 255).expand(-1, 3, -1, -1), atol=1e-5)
    single = denormalize(to_model_input(batch)[0])
    assert single.shape == (3, 32, 32)


def test_to_display_gives_uint8_rgb():
    out = to_display(to_model_input(_batch())[0])
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)


@pytest.mark.parametrize("name", AugmentConfig.names())
def test_each_augmentation_switch_changes_images_on_its_own(name):
    cfg = AugmentConfig().only([name])
    assert cfg.enabled() == (name,)
    x = _batch(16).float() / 255
    out = augment(x, cfg, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.allclose(out, x)


def test_no_augmentation_is_identity():
    x = _batch().float() / 255
    assert torch.equal(augment(x, AugmentConfig.none(), torch.Generator()), x)
    assert torch.equal(to_model_input(_batch(), AugmentConfig.none()), to_model_input(_batch()))


def test_augmentation_differs_per_image_and_repeats_with_the_seed():
    same = _batch(1).expand(8, -1, -1, -1).float() / 255
    a = augment(same, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment(same, AugmentConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1]), "each image in a batch gets its own random draw"


def test_hflip_only_mirrors_exactly():
    x = _batch(32).float() / 255
    out = augment(x, AugmentConfig().only(["hflip"]), torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_only_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig().only(["hflip", "sharpen"])
