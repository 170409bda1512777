import numpy as np
import pytest
import torch
from PIL import Image

from cxr.data.lungs import HideLungs, box_region
from cxr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    augment,
    denormalize,
    prepare_image,
    to_display,
    to_model_input,
    to_model_input_and_region,
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


def test_only_keeps_a_configs_strengths_and_switches_others_on_at_the_default():
    gentle = AugmentConfig(rotate=0.0, scale=0.05, translate=0.03, brightness=0.0, contrast=0.0)
    kept = gentle.only(["hflip", "scale", "rotate"])
    assert (kept.hflip, kept.scale, kept.rotate) == (True, 0.05, AugmentConfig().rotate)
    assert (kept.translate, kept.brightness, kept.contrast) == (0.0, 0.0, 0.0)
    assert AugmentConfig.none().only(["translate"]) == AugmentConfig().only(["translate"])


def test_only_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig().only(["hflip", "sharpen"])


def _lung_masks(n, size, seed=0):
    """Two random elliptical 'lungs' per image, 0/1 uint8 [n, 1, size, size]."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size] / size
    masks = np.zeros((n, 1, size, size), np.uint8)
    for k in range(n):
        for cx in (0.3, 0.7):
            cx, cy = cx + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05)
            masks[k, 0] |= (((u - cx) / 0.15) ** 2 + ((v - cy) / 0.3) ** 2 <= 1).astype(np.uint8)
    return torch.from_numpy(masks)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("mode", ["box", "mask"])
def test_hidden_region_is_black_in_the_model_input_after_all_augmentations(size, mode):
    batch = torch.full((6, 1, size, size), 180, dtype=torch.uint8)  # bright everywhere: any leak would show
    masks = _lung_masks(6, size)
    hide = HideLungs(mode)
    x, region = to_model_input_and_region(batch, AugmentConfig(), torch.Generator().manual_seed(0), hide, masks)
    shown = denormalize(x)
    assert region.shape == (6, 1, size, size) and region.dtype == torch.bool
    assert (shown.masked_select(region) == 0).all()  # exactly black after un-normalising, in all three channels
    black = to_model_input(torch.zeros(1, 1, 1, 1, dtype=torch.uint8))  # what the model sees for a black pixel
    assert torch.equal(x.masked_select(region), black.expand_as(x).masked_select(region))
    assert 0.2 < region.float().mean() < 0.8  # the region is the lungs' size, moved, not vanished or everywhere
    assert (shown.masked_select(~region) > 0).float().mean() > 0.9  # the rest is still there (some padding)
    same = to_model_input(batch, AugmentConfig(), torch.Generator().manual_seed(0), hide=hide, masks=masks)
    assert torch.equal(same, x)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("mode", ["box", "mask"])
def test_hidden_region_without_augmentation_is_exactly_the_box_or_mask(size, mode):
    batch = _batch(3, size)
    masks = _lung_masks(3, size)
    x, region = to_model_input_and_region(batch, None, None, HideLungs(mode), masks)
    expected = box_region(HideLungs(mode).box, size).expand(3, 1, -1, -1) if mode == "box" else masks.bool()
    assert torch.equal(region, expected)
    shown = denormalize(x)
    plain = denormalize(to_model_input(batch))
    assert (shown.masked_select(region) == 0).all()
    assert torch.equal(shown.masked_select(~region), plain.masked_select(~region))


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("names", [["hflip"], ["hflip", "rotate", "scale", "translate"]])
def test_the_mask_moves_with_the_image(size, names):
    """A white square drawn in the image and given as its mask: after augmentation the hidden region is exactly
    where the square went, because both are resampled by the same random draw."""
    masks = torch.zeros(8, 1, size, size, dtype=torch.uint8)
    masks[:, :, size // 5 : size // 2, size // 8 : size // 3] = 1
    batch = masks * 255
    cfg = AugmentConfig().only(names)
    moved = denormalize(to_model_input(batch, cfg, torch.Generator().manual_seed(2)))[:, :1]
    _, region = to_model_input_and_region(batch, cfg, torch.Generator().manual_seed(2), HideLungs("mask"), masks)
    assert torch.equal(region, moved > 0)
    assert not torch.equal(region, masks.bool())  # it did move


@pytest.mark.parametrize("mode", ["none", "box", "mask"])
def test_hiding_draws_the_same_random_numbers(mode):
    """Seeded runs stay as they were: hiding consumes no randomness, and with nothing hidden the input is the plain
    augment-then-normalise path."""
    batch, masks = _batch(5, 64), _lung_masks(5, 64)
    plain_gen, hidden_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    plain = to_model_input(batch, AugmentConfig(), plain_gen)
    hidden = to_model_input(batch, AugmentConfig(), hidden_gen, hide=HideLungs(mode), masks=masks)
    assert torch.equal(plain_gen.get_state(), hidden_gen.get_state())
    reference = augment(batch.float() / 255, AugmentConfig(), torch.Generator().manual_seed(7)).expand(-1, 3, -1, -1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.equal(plain, (reference - mean) / std)
    assert torch.equal(hidden, plain) == (mode == "none")


def test_geometry_is_the_same_draw_with_or_without_hiding():
    batch = _batch(4, 64)
    cfg = AugmentConfig().only(["hflip", "rotate", "scale", "translate"])  # no brightness: pixels comparable
    plain = to_model_input(batch, cfg, torch.Generator().manual_seed(3))
    hidden, region = to_model_input_and_region(batch, cfg, torch.Generator().manual_seed(3), HideLungs("box"))
    keep = ~region.expand(-1, 3, -1, -1)
    assert torch.allclose(hidden[keep], plain[keep], atol=1e-6)


def test_hiding_does_not_mutate_the_batch_or_masks():
    batch, masks = _batch(3, 32), _lung_masks(3, 32)
    before, masks_before = batch.clone(), masks.clone()
    to_model_input(batch, AugmentConfig(), torch.Generator().manual_seed(0), HideLungs("mask"), masks)
    to_model_input(batch, None, None, HideLungs("mask"), masks)
    assert torch.equal(batch, before) and torch.equal(masks, masks_before)


def test_mask_mode_needs_one_mask_per_image():
    with pytest.raises(ValueError, match="needs the lung masks"):
        to_model_input(_batch(2, 32), hide=HideLungs("mask"))
    with pytest.raises(ValueError, match="3 lung masks for a batch of 2"):
        to_model_input(_batch(2, 32), hide=HideLungs("mask"), masks=_lung_masks(3, 32))
