import os

import pytest

from cxr.data import DEFAULT_CLASSES, index_dataset, parse_classes, split_dataset
from tests.imagefiles import write_images


def test_kaggle_v4_layout_reads_images_not_masks(synthetic_root):
    index = index_dataset(synthetic_root)
    assert index.layout == "kaggle-v4" and index.synthetic
    assert index.classes == DEFAULT_CLASSES
    assert index.counts() == {"covid": 12, "normal": 12, "viral": 12}
    assert all("masks" not in f.parts for f in index.files)


def test_lung_opacity_is_read_when_asked_for(synthetic_root):
    index = index_dataset(synthetic_root, parse_classes("covid,normal,viral,lung_opacity"))
    assert index.counts()["lung_opacity"] == 12


@pytest.mark.parametrize("names", [("COVID-19", "NORMAL", "Viral Pneumonia"), ("covid-19", "normal", "viral pneumonia")])
def test_first_release_flat_layout_in_either_case(tmp_path, names):
    for name in names:
        write_images(tmp_path / name, 4)
    index = index_dataset(tmp_path)
    assert index.layout == "kaggle-v1" and not index.synthetic
    assert index.counts() == {"covid": 4, "normal": 4, "viral": 4}


def test_plain_class_folders_with_jpegs_and_nested_wrapper(tmp_path):
    root = tmp_path / "download" / "COVID-19_Radiography_Dataset"
    write_images(root / "covid", 3, suffix=".jpg")
    write_images(root / "normal", 3)
    write_images(root / "viral" / "batch1", 3)  # nested folders are searched too
    index = index_dataset(tmp_path)  # the wrapper folders are found
    assert index.root == root and index.counts() == {"covid": 3, "normal": 3, "viral": 3}


def test_any_class_names_work_as_keys(tmp_path):
    write_images(tmp_path / "cats", 3)
    write_images(tmp_path / "dogs", 3)
    index = index_dataset(tmp_path, ("cats", "dogs"))
    assert index.layout == "class-folders" and index.counts() == {"cats": 3, "dogs": 3}


def test_missing_class_names_the_class_and_what_was_found(tmp_path):
    write_images(tmp_path / "COVID", 3)
    write_images(tmp_path / "Normal", 3)
    with pytest.raises(ValueError, match=r"no folder for class 'viral'.*COVID, Normal"):
        index_dataset(tmp_path)


def test_empty_class_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        index_dataset(tmp_path / "nowhere")
    for name in ("COVID", "Normal", "Viral Pneumonia"):
        (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match="class 'covid' has no images"):
        index_dataset(tmp_path)


def test_symlink_loop_does_not_hang(tmp_path):
    for name in ("COVID", "Normal", "Viral Pneumonia"):
        write_images(tmp_path / name, 3)
    os.symlink(tmp_path / "COVID", tmp_path / "COVID" / "loop")
    assert index_dataset(tmp_path).counts()["covid"] == 3


@pytest.mark.parametrize("bad", ["covid", "covid,covid", ""])
def test_parse_classes_needs_two_distinct_keys(bad):
    with pytest.raises(ValueError):
        parse_classes(bad)


def test_split_is_stratified_disjoint_and_seeded(synthetic_root):
    index = index_dataset(synthetic_root)
    split = split_dataset(index, test_per_class=3, val_per_class=2, seed=1)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(index.files)))
    assert [sum(index.labels[i] == c for i in split.test) for c in range(3)] == [3, 3, 3]
    assert split.sizes() == {"train": 21, "val": 6, "test": 9}
    assert split == split_dataset(index, test_per_class=3, val_per_class=2, seed=1)
    assert split.test != split_dataset(index, test_per_class=3, val_per_class=2, seed=2).test


def test_split_by_fraction(synthetic_root):
    split = split_dataset(index_dataset(synthetic_root), test_fraction=0.25, val_per_class=2)
    assert len(split.test) == 9


@pytest.mark.parametrize("n, ok", [(1, False), (2, False), (3, True), (7, True)])
def test_small_classes_shrink_the_split_or_fail_clearly(tmp_path, n, ok):
    write_images(tmp_path / "COVID", 40)
    write_images(tmp_path / "Normal", 40)
    write_images(tmp_path / "Viral Pneumonia", n)
    index = index_dataset(tmp_path)
    if not ok:
        with pytest.raises(ValueError, match="at least 3"):
            split_dataset(index)
        return
    split = split_dataset(index, test_per_class=30, val_per_class=5)
    viral = [i for i in split.train if index.labels[i] == 2]
    assert viral and split.notes and "only" in split.notes[0]
