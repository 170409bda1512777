"""The decoded-image cache: decoded once, in the background or on demand, masks beside, batches as training sees them."""

import pytest
import torch
from PIL import Image

from cxr.data.cache import ImageCache, iterate_batches
from cxr.data.index import index_dataset
from cxr.data.lungs import HideLungs, box_region, mask_path
from cxr.data.transforms import denormalize, to_model_input
from tests.imagefiles import write_images


def test_cache_skips_and_reports_unreadable_files(tmp_path):
    write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_text("not an image")
    files = sorted(tmp_path.glob("*.png"))
    cache = ImageCache(files, 16)
    batches = list(iterate_batches(cache, list(range(4)), [0, 1, 0, 1], batch_size=4))
    assert len(batches) == 1 and batches[0][0].shape == (3, 1, 16, 16)
    assert len(cache.bad) == 1 and "broken.png" in cache.bad_report()


def test_cache_decodes_each_image_once(tmp_path, monkeypatch):
    write_images(tmp_path, 2)
    cache = ImageCache(sorted(tmp_path.glob("*.png")), 16)
    calls = []
    import cxr.data.cache

    real = cxr.data.cache.read_xray
    monkeypatch.setattr(cxr.data.cache, "read_xray", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, _ = cache.get([0, 1])
    second, _ = cache.get([1, 0])
    assert len(calls) == 2 and first[0].equal(second[1])


def test_background_decoding_matches_inline_decoding_and_get_waits_for_it(tmp_path, monkeypatch):
    write_images(tmp_path, 5)
    (tmp_path / "zz-broken.png").write_bytes(b"")
    files = sorted(tmp_path.glob("*.png"))
    inline, workers = ImageCache(files, 16), ImageCache(files, 16)
    workers.start_filling([5, 4, 3, 2, 1, 0], workers=2)

    inline_calls = []  # in this process: get must wait for the workers, not decode itself
    real = workers._decode
    monkeypatch.setattr(workers, "_decode", lambda i: inline_calls.append(i) or real(i))
    b, ok_b = workers.get(range(6))
    workers.stop_filling()
    a, ok_a = inline.get(range(6))
    assert ok_a == ok_b == [0, 1, 2, 3, 4] and a.equal(b) and set(workers.bad) == {5}
    assert inline_calls == [] and workers._filler is None


def test_stopped_background_decoding_leaves_the_rest_to_get(tmp_path):
    write_images(tmp_path, 40)
    files = sorted(tmp_path.glob("*.png"))
    cache = ImageCache(files, 16)
    cache.start_filling(range(40), workers=1)
    cache.stop_filling()  # at once: the thread ends and its worker process with it
    assert cache._filler is None and cache._queued == set()
    images, ok = cache.get(range(40))  # what it did not reach is decoded here
    assert ok == list(range(40)) and images.equal(ImageCache(files, 16).get(range(40))[0])


@pytest.mark.parametrize("size", [32, 64])
def test_cache_keeps_lung_masks_beside_images_decoded_once(synthetic_root, size, monkeypatch):
    index = index_dataset(synthetic_root)
    cache = ImageCache(index.files, size, masks=True)
    images, ok = cache.get([0, 5, 20])
    import cxr.data.cache

    calls = []
    real = cxr.data.cache.read_mask
    monkeypatch.setattr(cxr.data.cache, "read_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    masks = cache.get_masks(ok)
    again = cache.get_masks(list(reversed(ok)))
    assert masks.shape == images.shape == (3, 1, size, size) and masks.dtype == torch.uint8
    assert set(masks.unique().tolist()) == {0, 1} and len(calls) == 3
    assert torch.equal(again[0], masks[2]) and torch.equal(masks[0], real(mask_path(index.files[0]), size))


def test_cache_refuses_a_missing_mask_naming_the_file(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / "C" / "images").mkdir(parents=True, exist_ok=True)
        Image.linear_gradient("L").resize((40, 40)).save(tmp_path / "C" / "images" / name)
    (tmp_path / "C" / "masks").mkdir()
    Image.new("L", (40, 40), 255).save(tmp_path / "C" / "masks" / "a.png")
    files = sorted((tmp_path / "C" / "images").glob("*.png"))
    cache = ImageCache(files, 16, masks=True)
    _, ok = cache.get([0, 1])
    assert cache.get_masks([0]).all()
    with pytest.raises(ValueError, match=r"no lung mask for b.png \(looked for .*masks/b.png\)"):
        cache.get_masks(ok)
    with pytest.raises(ValueError, match="masks=True"):
        ImageCache(files, 16).get_masks([0])
    workers = ImageCache(files, 16, masks=True)  # the same through the decoding processes
    workers.start_filling([0, 1], workers=1)
    _, ok = workers.get([0, 1])
    workers.stop_filling()
    assert ok == [0, 1] and workers._mask_filled == bytearray([1, 0]) and workers.get_masks([0]).all()
    with pytest.raises(ValueError, match="no lung mask for b.png"):
        workers.get_masks([1])


def test_cache_fill_with_worker_processes_fills_masks_too(synthetic_root):
    files = index_dataset(synthetic_root).files[:6]
    inline, workers = ImageCache(files, 32, masks=True), ImageCache(files, 32, masks=True)
    workers.start_filling(range(6), workers=2)
    workers.get(range(6))
    workers.stop_filling()
    assert workers._mask_filled == bytearray([1] * 6)
    assert inline.get_masks(range(6)).equal(workers.get_masks(range(6)))


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("mode", ["box", "mask"])
def test_evaluation_batches_are_hidden_like_training_ones(synthetic_root, size, mode):
    index = index_dataset(synthetic_root)
    cache = ImageCache(index.files, size, masks=mode == "mask")
    ids = list(range(0, 36, 4))
    (images, labels), = list(iterate_batches(cache, ids, index.labels, batch_size=16, hide=HideLungs(mode)))
    plain, _ = cache.get(ids)
    if mode == "box":
        region = box_region(HideLungs().box, size).expand(len(ids), 1, -1, -1)
    else:
        region = cache.get_masks(ids).bool()
    assert region.any() and (images[region] == 0).all() and torch.equal(images[~region], plain[~region])
    assert (denormalize(to_model_input(images)).masked_select(region) == 0).all()
    assert plain[region].float().mean() > 10  # the cache itself keeps the whole image
