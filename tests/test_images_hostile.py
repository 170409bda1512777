"""Hostile and odd image files (issue 10): DICOM bombs, pixels that decoded wrong without a word, multi-frame
DICOM, and messages that were not one plain sentence. Each is checked through `read_xray` and through the app's
Classify handler, which shows the user exactly the library's sentence."""

import re
import tracemalloc

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from cxr.data import decode_budget
from cxr.data.images import decode_cost, read_xray
from demo.classify_tab import classify
from tests import imagefiles


def assert_one_sentence(message: str, name: str) -> None:
    """What a person should see: one sentence that names their file, with no traceback-speak in it."""
    assert name in message, message
    assert "\n" not in message and ". " not in message.rstrip("."), message
    assert not re.search(r"0x[0-9a-fA-F]{6,}", message), "a memory address"
    for leak in ("pip install", "force=True", "MAX_TEXT", "Error:", "PngImagePlugin"):
        assert leak not in message, message


def refusal(path) -> str:
    with pytest.raises(ValueError) as info:
        read_xray(path)
    assert_one_sentence(str(info.value), path.name)
    return str(info.value)


def app_refusal(ctx, path) -> str:
    with pytest.raises(gr.Error) as info:
        classify(ctx, str(path), "tiny.pt", "predicted class", 0.45)
    assert_one_sentence(info.value.message, path.name)
    return info.value.message


def peak_python_bytes(fn) -> int:
    """Peak bytes allocated through Python (bytes objects, numpy arrays) while `fn` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------- 1. DICOM pixel limit and bounded deflate
@pytest.mark.parametrize("side", [12_000, 20_000])
def test_deflated_dicom_bomb_is_refused_before_it_inflates(tmp_path, side):
    path = imagefiles.dicom_deflated(tmp_path / "bomb.dcm", side)  # 12000: ~280 KB on disk, 288 MB inflated
    peak = peak_python_bytes(lambda: pytest.raises(ValueError, read_xray, path))
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated to refuse a {side}x{side} header"
    assert "megapixels" in refusal(path)


def test_deflated_dicom_declaring_65535_square_is_refused_from_its_header(tmp_path):
    assert "65535x65535" in refusal(imagefiles.dicom_deflated(tmp_path / "huge.dcm", 65_535, pixel_bytes=1000))


def test_deflated_dicom_cannot_inflate_past_the_pixels_it_declares(tmp_path):
    path = imagefiles.dicom_deflated(tmp_path / "swollen.dcm", 64, pixel_bytes=200_000_000)
    peak = peak_python_bytes(lambda: pytest.raises(ValueError, read_xray, path))
    assert peak < 20e6, f"{peak / 1e6:.0f} MB inflated for a 64x64 image"
    assert "inflates to more" in refusal(path)


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian", "RLELossless",
                                    "JPEG2000Lossless", "JPEGLSLossless"])
def test_dicom_pixel_limit_holds_for_every_transfer_syntax(tmp_path, syntax):
    assert "megapixels" in refusal(imagefiles.dicom_declaring(tmp_path / "big.dcm", 12_000, syntax))


@pytest.mark.parametrize("frames, samples", [(100, 1), (1, 3)])
def test_dicom_pixel_limit_counts_frames_and_colour_samples(tmp_path, frames, samples):
    # 1200 x 1200 x 100 frames and 7000 x 7000 x 3 samples are both over 120 million values to decode
    side = 1200 if frames > 1 else 7000
    path = imagefiles.dicom_declaring(tmp_path / "many.dcm", side, frames=frames, samples=samples)
    assert "megapixels" in refusal(path)


def test_app_refuses_a_dicom_bomb_with_the_size_sentence(ctx, tmp_path):
    assert "megapixels" in app_refusal(ctx, imagefiles.dicom_deflated(tmp_path / "bomb.dcm", 12_000))


def test_deflated_dicom_within_the_limit_reads_like_the_plain_one(tmp_path):
    plain = np.asarray(read_xray(imagefiles.dicom(tmp_path / "a.dcm")))
    deflated = np.asarray(read_xray(imagefiles.dicom(tmp_path / "b.dcm", syntax="DeflatedExplicitVRLittleEndian")))
    assert np.array_equal(plain, deflated)


# ---------------------------------------------------------------- 6. pixels decoded right, or refused
def test_sixteen_bit_rgb_dicom_keeps_a_smooth_ramp(tmp_path):
    row = np.asarray(read_xray(imagefiles.dicom_rgb16_ramp(tmp_path / "rgb16.dcm"))).astype(int)[0]
    assert (np.diff(row) >= 0).all(), "cutting 16-bit values to 8 bits wraps the ramp into a saw-tooth"
    assert row[0] == 0 and row[-1] == 255


def test_nan_and_inf_pixels_do_not_blacken_a_float_tiff(tmp_path):
    arr = np.asarray(read_xray(imagefiles.float_tiff_with_nan(tmp_path / "float.tif"))).astype(int)
    expected = imagefiles.gradient().astype(int)
    finite = np.ones(arr.shape, bool)
    finite[5, 40] = finite[50, 70] = False
    assert np.abs(arr[finite] - expected[finite]).max() <= 1 and arr[5, 40] == arr[50, 70] == 0


def test_fully_transparent_png_reads_its_colour_channels(tmp_path):
    arr = np.asarray(read_xray(imagefiles.png_transparent(tmp_path / "clear.png")))
    assert np.array_equal(arr, imagefiles.gradient())


@pytest.mark.parametrize("writer", [imagefiles.png_constant, imagefiles.png_1x1])
def test_image_with_no_content_is_refused_not_classified(ctx, tmp_path, writer):
    path = writer(tmp_path / "blank.png")
    assert "no content" in refusal(path)
    assert "no content" in app_refusal(ctx, path)


def test_transparent_constant_png_is_refused_as_no_content(tmp_path):
    Image.new("RGBA", (30, 20), (255, 255, 255, 0)).save(tmp_path / "void.png")
    assert "no content" in refusal(tmp_path / "void.png")


@pytest.mark.parametrize("writer, name", [(imagefiles.dicom_rgb16_ramp, "rgb16.dcm"),
                                          (imagefiles.float_tiff_with_nan, "float.tif"),
                                          (imagefiles.png_transparent, "clear.png")])
def test_app_classifies_images_that_used_to_decode_wrong(ctx, tmp_path, writer, name):
    r = classify(ctx, str(writer(tmp_path / name)), "tiny.pt", "predicted class", 0.45)
    assert len(r.probs) == 3 and r.overlay.std() > 0


# ---------------------------------------------------------------- 7. multi-frame DICOM: the first frame, said so
@pytest.mark.parametrize("rgb", [True, False], ids=["rgb", "gray"])
def test_multiframe_dicom_reads_the_first_frame_and_says_so(tmp_path, rgb):
    with pytest.warns(UserWarning, match="3 frames; only the first"):
        img = read_xray(imagefiles.dicom_multiframe(tmp_path / "frames.dcm", rgb=rgb))
    assert np.abs(np.asarray(img).astype(int) - imagefiles.gradient()).max() <= 1, "later frames are inverted"
    assert img.info["frames"] == 3 and "only the first" in img.info["note"]


def test_multiframe_note_survives_downscaling(tmp_path):
    with pytest.warns(UserWarning):
        img = read_xray(imagefiles.dicom_multiframe(tmp_path / "frames.dcm"), max_side=40)
    assert max(img.size) == 40 and img.info["frames"] == 3


@pytest.mark.filterwarnings("ignore:.*only the first")
def test_app_classifies_an_rgb_multiframe_dicom(ctx, tmp_path):
    r = classify(ctx, str(imagefiles.dicom_multiframe(tmp_path / "f.dcm")), "tiny.pt", "predicted class", 0.45)
    assert len(r.probs) == 3 and r.overlay.ndim == 3


# ---------------------------------------------------------------- 8. one plain sentence for every bad file
@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(imagefiles.BROKEN))
def test_every_broken_file_gets_one_plain_sentence_in_the_library_and_the_app(ctx, tmp_path, kind):
    writer, name, words = imagefiles.BROKEN[kind]
    path = writer(tmp_path / name)
    assert words in refusal(path)
    assert words in app_refusal(ctx, path)


@pytest.mark.parametrize("syntax", ["JPEGLSLossless", "JPEGLSNearLossless", "JPEGLossless", "JPEGLosslessSV1"])
def test_undecodable_dicom_compression_says_what_to_do_not_what_to_install(tmp_path, syntax):
    message = refusal(imagefiles.dicom_encapsulated(tmp_path / "scan.dcm", syntax))
    assert "cannot decode" in message and "uncompressed" in message


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP"])
def test_png_with_oversized_metadata_is_read_without_it(tmp_path, kind):
    img = read_xray(imagefiles.png_big_metadata(tmp_path / "meta.png", kind))
    assert np.array_equal(np.asarray(img), imagefiles.gradient())


def test_png_named_dcm_is_read_by_its_content(tmp_path):
    (tmp_path / "really-a-png.dcm").write_bytes(imagefiles.png_8bit(tmp_path / "a.png").read_bytes())
    assert read_xray(tmp_path / "really-a-png.dcm").size == (80, 60)


# ---------------------------------------------------------------- 4. memory of big decodes is bounded and returned
def test_big_decode_gives_its_memory_back_when_done(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(decode_budget, "_malloc_trim", lambda pad: calls.append(pad))
    Image.fromarray(np.tile(np.arange(2800, dtype=np.uint16), (2600, 1)) * 20).save(tmp_path / "big.png")
    read_xray(tmp_path / "big.png", max_side=512)  # 7.3 MP: its decode reserves over TRIM_BYTES
    read_xray(imagefiles.png_8bit(tmp_path / "small.png"))
    assert calls == [0], "trimmed once, after the big decode, and not after the small one"


def test_sixteen_bit_png_larger_than_twice_max_side_is_downscaled(tmp_path):
    Image.fromarray(np.tile(np.arange(300, dtype=np.uint16) * 200, (200, 1))).save(tmp_path / "wide16.png")
    img = read_xray(tmp_path / "wide16.png", max_side=100)  # Pillow cannot reduce() a 16-bit image
    assert img.size == (100, 67) and np.asarray(img)[:, -1].min() > 240


@pytest.mark.parametrize("size", [(1, 100_000), (100_000, 1), (30, 4_000)])
def test_a_thin_strip_is_refused_before_its_pixels_are_decoded(tmp_path, size):
    # Pillow keeps a pointer per row: a 1 x 119,000,000 palette PNG of 1 MB once took 6.5 GB to decode.
    path = tmp_path / "strip.png"
    Image.new("P", size, 0).save(path, transparency=0)
    assert "strip" in refusal(path)


def test_a_long_leg_scan_shape_is_still_read(tmp_path):
    path = tmp_path / "long.png"
    Image.linear_gradient("L").resize((200, 800)).save(path)
    assert read_xray(path).size == (200, 800)


def test_the_decode_budget_counts_palette_and_alpha_copies_and_rows(tmp_path):
    gray, palette = Image.new("L", (100, 100)), Image.new("P", (100, 100))
    assert decode_cost(palette) >= 18 * 100 * 100 > decode_cost(gray) >= 3 * 100 * 100
    assert decode_cost(Image.new("L", (10, 200))) - decode_cost(Image.new("L", (200, 10))) == 5 * 8 * 190
