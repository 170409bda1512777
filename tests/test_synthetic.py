import numpy as np
import pytest
from PIL import Image

from cxr.data.index import index_dataset, parse_classes
from cxr.data.lungs import has_masks, mask_path, read_mask
from cxr.data.synthetic import KAGGLE_FOLDERS, draw_radiograph, draw_with_evidence, make_synthetic

# Mean pixel value of the first two images of each class at 64 px, seed 0, when lung masks were added. The images
# must stay as they were (other tests and the README's figure use them): drawing a mask may not consume a random
# number. A tolerance, not a hash, so one grey level of rounding on another CPU does not fail it.
IMAGE_MEANS = {
    "covid": (91.648, 83.388),
    "normal": (86.416, 78.791),
    "viral": (86.258, 94.595),
    "lung_opacity": (81.654, 87.468),
}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), per_class=2, size=64, seed=0)


def _read(path):
    return np.asarray(Image.open(path), dtype=np.float64)


def test_images_are_unchanged_for_the_same_seed(small_set):
    for key, (folder, prefix) in KAGGLE_FOLDERS.items():
        means = [_read(small_set / folder / "images" / f"{prefix}-{i}.png").mean() for i in (1, 2)]
        assert means == pytest.approx(IMAGE_MEANS[key], abs=0.05), key


@pytest.mark.parametrize("size", [48, 64])
def test_every_image_has_a_mask_with_the_same_name(tmp_path, size):
    root = make_synthetic(tmp_path, per_class=3, size=size, seed=1, classes=("covid", "viral"))
    index = index_dataset(root, ("covid", "viral"))
    assert has_masks(index.files) and len(index.files) == 6
    for image in index.files:
        mask = mask_path(image)
        assert mask.name == image.name and mask.parent.name == "masks"
        assert Image.open(mask).size == Image.open(image).size == (size, size)


@pytest.mark.parametrize("key", list(KAGGLE_FOLDERS))
def test_masks_are_two_white_lung_fields_on_black(small_set, key):
    folder, prefix = KAGGLE_FOLDERS[key]
    mask = _read(small_set / folder / "masks" / f"{prefix}-1.png")
    assert set(np.unique(mask)) == {0, 255}
    assert 0.15 < (mask > 0).mean() < 0.45  # the lungs, not the whole chest
    left, right = mask[:, :32] > 0, mask[:, 32:] > 0
    assert left.mean() > 0.1 and right.mean() > 0.1 and not (mask[:, 30:34] > 0).all()  # two fields, a gap between


def test_the_mask_is_drawn_from_the_same_pose_as_the_image():
    """Same seed, same draw: the mask returned with each image is the one written, and the lungs it marks are the
    dark fields of that image (darker than the chest around them)."""
    rng = np.random.default_rng([0, 1])
    img, mask = draw_radiograph("normal", 64, rng)
    lungs = mask > 0
    ring = np.zeros_like(lungs)
    rows, cols = np.nonzero(lungs)
    ring[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    assert img[lungs].mean() < img[ring & ~lungs].mean()


@pytest.mark.parametrize("key", list(KAGGLE_FOLDERS))
def test_the_signs_region_lies_in_the_lungs_and_costs_no_random_number(key):
    """The region a map should point at (benchmarks/map_grid.py scores maps on it): inside the lungs, empty for a
    normal X-ray, and drawing it leaves the image and the random stream as `draw_radiograph` has them."""
    a, b = np.random.default_rng([3, 1]), np.random.default_rng([3, 1])
    img, mask, signs = draw_with_evidence(key, 96, a)
    assert np.array_equal((img, mask), draw_radiograph(key, 96, b)) and a.random() == b.random()
    assert set(np.unique(signs)) <= {0, 255} and not (signs[mask == 0] > 0).any()
    share = (signs > 0).mean()
    assert share == 0 if key == "normal" else 0.01 < share < 0.5 * (mask > 0).mean(), share


def test_synthetic_masks_serve_the_hide_lungs_mask_mode(small_set):
    index = index_dataset(small_set, parse_classes("covid,normal,viral,lung_opacity"))
    mask = read_mask(mask_path(index.files[0]), 32)
    assert mask.shape == (1, 32, 32) and 0.15 < mask.float().mean() < 0.45
