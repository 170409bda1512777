import numpy as np
import pytest
from PIL import Image

from cxr.data.images import read_xray
from tests import imagefiles


@pytest.mark.filterwarnings("ignore:.*only the first")  # multi-frame DICOM says it reads one frame
@pytest.mark.parametrize("kind", sorted(imagefiles.READABLE))
def test_read_xray_gives_8bit_gray_for_every_readable_format(kind, tmp_path):
    writer, name = imagefiles.READABLE[kind]
    img = read_xray(writer(tmp_path / name))
    assert img.mode == "L"
    assert min(img.size) >= 1
    arr = np.asarray(img)
    assert arr.max() > arr.min(), "the picture's contrast must survive the conversion"


@pytest.mark.parametrize("kind", sorted(imagefiles.BROKEN))
def test_read_xray_refuses_broken_files_with_one_sentence(kind, tmp_path):
    writer, name, words = imagefiles.BROKEN[kind]
    with pytest.raises(ValueError, match=words) as info:
        read_xray(writer(tmp_path / name))
    assert "\n" not in str(info.value) and name in str(info.value)


def test_sixteen_bit_png_uses_full_range_not_clipping(tmp_path):
    arr = np.asarray(read_xray(imagefiles.png_16bit(tmp_path / "a.png")))
    # Pillow's plain convert("L") would clip every value above 255 to white; we window instead.
    assert arr.min() == 0 and arr.max() == 255
    assert (arr == 255).mean() < 0.1 and len(np.unique(arr)) >= 60


def test_exif_orientation_is_applied(tmp_path):
    img = read_xray(imagefiles.jpeg_exif_rotated(tmp_path / "r.jpg"))
    assert img.size == (60, 80)


def test_dicom_monochrome1_is_inverted_relative_to_monochrome2(tmp_path):
    m2 = np.asarray(read_xray(imagefiles.dicom(tmp_path / "a.dcm"))).astype(int)
    m1 = np.asarray(read_xray(imagefiles.dicom(tmp_path / "b.dcm", "MONOCHROME1"))).astype(int)
    assert np.abs((255 - m1) - m2).max() <= 1


def test_rgba_transparent_regions_read_as_black(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the left half is opaque
    rgba[:, :5, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    arr = np.asarray(read_xray(tmp_path / "t.png"))
    assert arr[:, :5].min() == 255 and arr[:, 5:].max() == 0


def test_huge_image_is_downscaled_to_max_side(tmp_path):
    path = imagefiles.png_huge(tmp_path / "huge.png")
    img = read_xray(path, max_side=512)
    assert max(img.size) == 512 and img.mode == "L"


def test_bytes_and_file_objects_are_accepted(tmp_path):
    path = imagefiles.png_8bit(tmp_path / "a.png")
    assert read_xray(path.read_bytes()).size == read_xray(path).size
    with open(path, "rb") as f:
        assert read_xray(f).size == (80, 60)


@pytest.mark.parametrize("fmt", ["png", "dicom"])
def test_pixel_limit_leaves_room_for_a_10000_square_scan(fmt, tmp_path):
    # Headers declaring the size over a few bytes of pixels: a 10000-pixel square gets past the size check (and
    # then fails as damaged data), a 12000-pixel one is refused for its size.
    def write(side: int):
        if fmt == "png":
            return imagefiles.decompression_bomb(tmp_path / f"{side}.png", side)
        return imagefiles.dicom_declaring(tmp_path / f"{side}.dcm", side)

    with pytest.raises(ValueError) as fits:
        read_xray(write(10_000))
    assert "megapixels" not in str(fits.value) and ("damaged" in str(fits.value) or "corrupt" in str(fits.value))
    with pytest.raises(ValueError, match="megapixels"):
        read_xray(write(12_000))


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        read_xray(tmp_path / "nope.png")
