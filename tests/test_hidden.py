"""What a model trained with hidden lungs never saw, drawn on its maps: the region from its settings, the sentence,
and every figure function (top losses, the attention strip) showing it where a model that saw everything does not."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from cxr.data.cache import ImageCache
from cxr.data.index import index_dataset
from cxr.data.lungs import DEFAULT_BOX
from cxr.explain.figures import attention_figure, cam_overlays, top_losses_figure
from cxr.explain.hidden import NO_MASK_SENTENCE, SENTENCE, Hidden, as_seen, draw_map, hidden_region
from cxr.explain.interpret import interpret
from cxr.train.checkpoint import load_checkpoint
from tests.test_report import fake_attention

MAGENTA = (255, 0, 255)
BOX = {"hide_lungs": "box", "hide_box": list(DEFAULT_BOX)}  # as a checkpoint keeps it (JSON: a list)


@pytest.mark.parametrize("size", [(64, 64), (90, 120), 33])
def test_the_box_is_the_same_fraction_of_any_picture(size):
    hidden = hidden_region(BOX, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert hidden.mode == "box" and hidden.region.shape == (h, w) and hidden.region.dtype == bool
    assert hidden.region[h // 2, w // 2] and not hidden.region[0, 0] and not hidden.region[-1, -1]
    assert abs(hidden.region.mean() - 0.7 * 0.8) < 0.06  # x 0.15..0.85, y 0.10..0.90
    assert hidden.sentence == SENTENCE


def test_a_model_that_saw_everything_hides_nothing_and_says_nothing():
    for config in ({}, {"hide_lungs": "none"}):
        hidden = hidden_region(config, 64)
        assert hidden.region is None and hidden.sentence == ""


def test_mask_mode_uses_the_images_own_mask_at_the_pictures_size_or_says_there_is_none():
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 2:7] = 1
    hidden = hidden_region({"hide_lungs": "mask"}, (64, 64), mask)
    assert hidden.region.shape == (64, 64) and hidden.region[32, 16] and not hidden.region[32, 48]
    assert hidden.sentence == SENTENCE
    without = hidden_region({"hide_lungs": "mask"}, (64, 64), None)
    assert without.region is None and without.sentence == NO_MASK_SENTENCE


@pytest.mark.parametrize("config", [{"hide_lungs": "chest"}, {"hide_lungs": "box", "hide_box": [0.9, 0.1, 0, 1]}])
def test_settings_out_of_range_are_refused_in_a_sentence(config):
    with pytest.raises(ValueError, match="hide"):
        hidden_region(config, 64)


def test_drawing_blacks_out_and_outlines_the_region_and_keeps_the_input():
    image = np.full((60, 80), 200, np.uint8)
    before = image.copy()
    heat = np.zeros((7, 7), np.float32)
    hidden = hidden_region(BOX, image.shape)
    drawn = draw_map(image, heat, 0.45, hidden)
    assert np.array_equal(image, before)  # the caller's picture is not changed
    edge = (drawn == MAGENTA).all(-1)
    assert edge.any() and hidden.region[edge].all()  # the line runs along the region's edge, inside it
    assert (drawn[hidden.region & ~edge] == 0).all()  # with no map on it, the inside is black, as the model saw it
    assert (drawn[~hidden.region] == 200).all()
    assert np.array_equal(draw_map(image, heat, 0.45, None), draw_map(image, heat, 0.45, Hidden("none", None)))
    assert np.array_equal(as_seen(image, None), image)


# ------------------------------------------------------------------------------------------------ the figures
@pytest.fixture(scope="module")
def interpreted(trained_checkpoint, synthetic_root):
    ckpt = load_checkpoint(trained_checkpoint)
    index = index_dataset(synthetic_root, ckpt.classes)
    cache = ImageCache(index.files, ckpt.image_size, masks=True)
    ids = list(range(0, len(index.files), 5))
    return ckpt, index, cache, interpret(ckpt.model, cache, ids, index.labels, ckpt.classes)


def _pixels(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def _magenta(pixels: np.ndarray) -> int:
    return int((pixels == MAGENTA).all(-1).sum())


@pytest.mark.parametrize("config", [BOX, {"hide_lungs": "mask"}], ids=["box", "mask"])
def test_cam_overlays_show_the_hidden_region_where_a_model_that_saw_everything_does_not(interpreted, config):
    ckpt, _, cache, interp = interpreted
    records = interp.top_losses(3)
    seen = cam_overlays(ckpt.model, cache, interp, records, size=96)
    hid = cam_overlays(ckpt.model, cache, interp, records, size=96, config=config)
    for plain, hidden in zip(seen, hid):
        assert plain.shape == hidden.shape == (96, 96, 3)
        assert _magenta(hidden) > 20 and _magenta(plain) == 0
        assert not np.array_equal(plain, hidden)


def test_the_top_losses_sheet_outlines_the_hidden_region_under_the_sentence(interpreted):
    ckpt, _, cache, interp = interpreted
    plain, hidden = (top_losses_figure(ckpt.model, cache, interp, 4, config=c) for c in (None, BOX))
    assert _magenta(_pixels(hidden)) > 100 and _magenta(_pixels(plain)) == 0
    assert hidden._suptitle is not None and SENTENCE in hidden._suptitle.get_text()
    assert plain._suptitle is None


@pytest.mark.parametrize("config, sentence", [(BOX, SENTENCE), ({"hide_lungs": "mask"}, SENTENCE)],
                         ids=["box", "mask"])
def test_the_attention_strip_figure_outlines_the_hidden_region(synthetic_root, config, sentence):
    index = index_dataset(synthetic_root)
    attention = fake_attention(index, steps=3)
    plain, hidden = attention_figure(attention, index, 48), attention_figure(attention, index, 48, config)
    assert _magenta(_pixels(hidden)) > 100 and _magenta(_pixels(plain)) == 0
    assert sentence in hidden._suptitle.get_text()


def test_the_attention_strip_of_a_mask_run_on_images_without_masks_says_so(tmp_path):
    from PIL import Image

    for c in ("COVID", "Normal", "Viral Pneumonia"):  # the <class>/*.png layout: no masks anywhere
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 5 + i, (40, 1))).save(tmp_path / c / f"{i}.png")
    index = index_dataset(tmp_path)
    fig = attention_figure(fake_attention(index, steps=2), index, 32, {"hide_lungs": "mask"})
    assert NO_MASK_SENTENCE in fig._suptitle.get_text() and _magenta(_pixels(fig)) == 0


def test_a_colour_picture_as_the_model_saw_it_is_black_only_inside():
    image = np.full((30, 30, 3), 180, np.uint8)
    seen = as_seen(image, hidden_region(BOX, image.shape))
    assert seen[15, 15].tolist() == [0, 0, 0] and seen[0, 0].tolist() == [180, 180, 180]
    assert (image == 180).all()
