import math

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.data.index import index_dataset
from cxr.data.lungs import (
    DEFAULT_BOX,
    HideLungs,
    area_share,
    box_region,
    count_masks,
    expected_mask_path,
    has_masks,
    hide_pixels,
    hide_region,
    lung_focus,
    lung_outline,
    mask_path,
    read_mask,
    require_masks,
)


def _square(size, lo, hi):
    mask = np.zeros((size, size), bool)
    mask[lo:hi, lo:hi] = True
    return mask


@pytest.mark.parametrize(
    "hide, message",
    [
        (HideLungs("lungs"), "mode must be one of"),
        (HideLungs("box", (0.5, 0.4, 0.1, 0.9)), "four fractions"),
        (HideLungs("box", (0.1, 0.9, 0.1, 1.5)), "four fractions"),
        (HideLungs("box", (0.1, 0.9, 0.1)), "four fractions"),  # type: ignore[arg-type]
    ],
)
def test_bad_hide_settings_are_refused_in_one_sentence(hide, message):
    with pytest.raises(ValueError, match=message):
        hide.validate()


@pytest.mark.parametrize(
    "text, expected",
    [("none", HideLungs()), ("Box", HideLungs("box")), ("mask", HideLungs("mask")),
     ("box:0.2,0.8,0.1,0.9", HideLungs("box", (0.2, 0.8, 0.1, 0.9)))],
)
def test_parse_reads_mode_and_box(text, expected):
    assert HideLungs.parse(text) == expected


def test_box_read_back_from_json_is_a_tuple():
    assert HideLungs("box", [0.2, 0.8, 0.1, 0.9]).box == (0.2, 0.8, 0.1, 0.9)  # type: ignore[arg-type]
    assert HideLungs("box").enabled and not HideLungs().enabled and HideLungs("mask").needs_masks


@pytest.mark.parametrize("size", [64, 128, 299])
def test_box_region_covers_the_box_fraction(size):
    region = box_region(DEFAULT_BOX, size)
    assert region.shape == (size, size) and region.dtype == torch.bool
    x0, x1, y0, y1 = DEFAULT_BOX
    assert abs(region.float().mean().item() - (x1 - x0) * (y1 - y0)) < 4 / size
    assert not region[0].any() and not region[:, 0].any() and region[size // 2, size // 2]


@pytest.mark.parametrize("size", [32, 64])
def test_hide_region_shapes_per_mode(size):
    masks = torch.zeros(3, 1, size, size, dtype=torch.uint8)
    masks[:, :, 4:10, 4:10] = 1
    assert hide_region(HideLungs("box"), None, size).shape == (1, 1, size, size)
    assert not hide_region(HideLungs(), None, size).any()
    region = hide_region(HideLungs("mask"), masks, size)
    assert region.shape == (3, 1, size, size) and torch.equal(region, masks.bool())
    with pytest.raises(ValueError, match="needs the lung masks"):
        hide_region(HideLungs("mask"), None, size)
    with pytest.raises(ValueError, match="shape"):
        hide_region(HideLungs("mask"), masks, size * 2)


@pytest.mark.parametrize("mode", ["box", "mask"])
def test_hide_pixels_blacks_out_the_region_only_and_keeps_its_input(mode):
    images = torch.full((2, 1, 32, 32), 200, dtype=torch.uint8)
    masks = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    masks[0, :, 5:20, 5:12] = 1
    masks[1, :, 10:30, 14:28] = 1
    hide = HideLungs(mode)
    out = hide_pixels(images, hide, masks)
    region = hide_region(hide, masks, 32).expand(2, -1, -1, -1)
    assert (out[region] == 0).all() and (out[~region] == 200).all()
    assert (images == 200).all()
    assert hide_pixels(images, None) is images and hide_pixels(images, HideLungs()) is images


def test_mask_path_finds_the_kaggle_mask_beside_the_image(synthetic_root):
    index = index_dataset(synthetic_root)
    image = index.files[0]
    assert mask_path(image) == image.parent.parent / "masks" / image.name
    assert has_masks(index.files) and count_masks(index.files) == len(index.files)
    require_masks(index.files)


def test_files_outside_the_kaggle_layout_have_no_mask(tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    assert expected_mask_path(tmp_path / "a.png") is None and mask_path(tmp_path / "a.png") is None
    assert not has_masks([tmp_path / "a.png"]) and not has_masks([])
    with pytest.raises(ValueError, match="a.png.*not in an images/ folder"):
        require_masks([tmp_path / "a.png"])


def test_a_missing_mask_is_named(tmp_path):
    for name in ("x-1.png", "x-2.png"):
        (tmp_path / "C" / "images").mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / "C" / "images" / name)
    (tmp_path / "C" / "masks").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "C" / "masks" / "x-1.png")
    files = sorted((tmp_path / "C" / "images").glob("*.png"))
    assert count_masks(files) == 1 and not has_masks(files)
    with pytest.raises(ValueError, match=r"1 of 2 have none, first x-2.png \(looked for .*masks/x-2.png\)"):
        require_masks(files)


@pytest.mark.parametrize("size", [64, 128, 299])
def test_read_mask_gives_zero_one_at_the_image_size(tmp_path, size):
    src = np.zeros((256, 256), np.uint8)
    src[64:192, 32:128] = 255  # a white lung on black, as the Kaggle masks are
    Image.fromarray(src).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", size)
    assert mask.shape == (1, size, size) and mask.dtype == torch.uint8
    assert set(mask.unique().tolist()) == {0, 1}
    assert abs(mask.float().mean().item() - 128 * 96 / 256**2) < 3 / size  # the same share of the image, resized
    assert mask[0, size // 2, size // 4] == 1 and mask[0, size // 2, 3 * size // 4] == 0


def test_an_all_black_mask_is_read_and_a_broken_one_named(tmp_path):
    Image.new("L", (256, 256), 0).save(tmp_path / "empty.png")
    assert not read_mask(tmp_path / "empty.png", 32).any()
    (tmp_path / "broken.png").write_text("not a png")
    with pytest.raises(ValueError, match="lung mask broken.png cannot be read"):
        read_mask(tmp_path / "broken.png", 32)


@pytest.mark.parametrize("size", [32, 64])
def test_lung_focus_is_one_inside_area_share_when_uniform_zero_outside(size):
    mask = _square(size, size // 4, 3 * size // 4)
    inside = np.where(mask, np.random.default_rng(0).random((size, size)), 0.0)
    assert lung_focus(inside, mask) == pytest.approx(1.0)
    assert lung_focus(np.ones((size, size)), mask) == pytest.approx(area_share(mask)) == pytest.approx(0.25)
    assert lung_focus(np.where(mask, 0.0, 0.7), mask) == 0.0


def test_lung_focus_resizes_the_heatmap_to_the_mask():
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True
    heat = np.zeros((7, 8), np.float32)
    heat[:, :4] = 1.0  # the left half at Grad-CAM's coarse resolution
    assert lung_focus(heat, mask) == pytest.approx(1.0, abs=0.05)
    assert lung_focus(torch.ones(7, 7), torch.from_numpy(mask)) == pytest.approx(0.5)


def test_lung_focus_of_a_map_with_no_evidence_is_nan():
    assert math.isnan(lung_focus(np.zeros((16, 16)), _square(16, 4, 12)))


@pytest.mark.parametrize("heat", [np.full((8, 8), -0.1), np.full((8, 8), np.nan), np.ones((2, 8, 8))])
def test_lung_focus_refuses_bad_heatmaps(heat):
    with pytest.raises(ValueError, match="heatmap"):
        lung_focus(heat, np.ones((8, 8), bool))


@pytest.mark.parametrize("size, width", [(16, 1), (64, 1), (64, 3)])
def test_lung_outline_is_the_edge_of_the_mask(size, width):
    lo, hi = size // 4, 3 * size // 4
    mask = _square(size, lo, hi)
    edge = lung_outline(mask, width)
    ring = mask & ~_square(size, lo + width, hi - width)
    assert edge.dtype == bool and np.array_equal(edge, ring)


def test_lung_outline_closes_at_the_image_border():
    edge = lung_outline(np.ones((8, 8), bool))
    assert edge[0].all() and edge[:, -1].all() and not edge[1:-1, 1:-1].any()
