import shutil

from cxr.train.checkpoint import load_checkpoint
from cxr.data.index import index_dataset, split_for
from cxr.explain.focus import lung_focus_report, lung_focus_words, shortcut_sentence


def test_lung_focus_is_reported_per_class_beside_the_lungs_area_and_absent_without_masks(trained_checkpoint, synthetic_root, tmp_path):
    ckpt = load_checkpoint(trained_checkpoint)
    index = index_dataset(synthetic_root, ckpt.classes)
    test = split_for(index, ckpt).test
    report = lung_focus_report(ckpt, index, test)
    assert report["available"] and set(report["per_class"]) == set(ckpt.classes)
    for v in report["per_class"].values():
        assert v["images"] > 0 and 0 <= v["lung_focus"] <= 1 and 0 < v["area_share"] < 1
    assert len(report["per_image"]) == len(test)
    assert "lungs are" in lung_focus_words(report)
    bare = tmp_path / "bare"
    shutil.copytree(synthetic_root, bare)
    for masks in bare.glob("*/masks"):
        shutil.rmtree(masks)
    index = index_dataset(bare, ckpt.classes)
    none = lung_focus_report(ckpt, index, split_for(index, ckpt).test)
    assert none["available"] is False and "no lung masks" in none["reason"]
    assert lung_focus_words(none).startswith("lung focus: not measured")


def test_the_shortcut_sentence_compares_with_chance():
    assert shortcut_sentence(0.71, 3, "box") == ("With the lungs hidden (box) it still gets 71% right; chance is 33%: "
                                                 "it is using something other than the lungs.")
    assert "close to guessing" in shortcut_sentence(0.36, 3, "mask")
