import os
import shutil
from types import SimpleNamespace

import pytest

from cxr.data.index import (DEFAULT_CLASSES, index_dataset, parse_classes, patient_key, relative_name, split_dataset,
                            split_for, split_names)
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


SPLIT_CONFIG = {"seed": 0, "test_per_class": 3, "val_per_class": 3}


def _model(saved, config=SPLIT_CONFIG):
    """A stand-in for a checkpoint: the settings its run had and the files it held out by name."""
    return SimpleNamespace(config=config, split=saved)


def _copy_without(root, tmp_path, names):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    for name in names:
        (copy / name).unlink()
    return index_dataset(copy)


def test_a_saved_split_keeps_its_test_images_when_the_folder_changes(synthetic_root, tmp_path):
    index = index_dataset(synthetic_root)
    split = split_for(index, SPLIT_CONFIG)
    saved = split_names(index, split)
    assert saved["test"][0].count("/") == 2 and len(saved["test"]) == 9  # "COVID/images/COVID-3.png"
    changed = _copy_without(synthetic_root, tmp_path, [relative_name(index, split.train[0])])  # one training image gone
    kept = split_for(changed, _model(saved))
    assert split_names(changed, kept) == saved and kept.notes == ()
    assert not set(kept.train) & (set(kept.val) | set(kept.test)) and len(kept.train) == len(changed.files) - 18
    # Rebuilt from the seed alone, the changed folder's "test" images would be others, some of them trained on.
    assert split_names(changed, split_for(changed, SPLIT_CONFIG))["test"] != saved["test"]


def test_a_saved_test_image_missing_from_the_folder_is_named_in_a_note(synthetic_root, tmp_path):
    index = index_dataset(synthetic_root)
    saved = split_names(index, split_for(index, SPLIT_CONFIG))
    kept = split_for(_copy_without(synthetic_root, tmp_path, saved["test"][:2]), _model(saved))
    assert split_for(index, _model({**saved, "test": saved["test"] + saved["test"][:1]})).test == \
        split_for(index, _model(saved)).test  # a name listed twice is one image, scored once
    assert len(kept.test) == 7 and kept.notes == ("2 of this model's 9 test images are not in this folder: the other 7 "
                                                  "are used",)


def test_a_model_of_other_data_gets_the_seeds_split_and_a_note_saying_so(synthetic_root):
    index = index_dataset(synthetic_root)
    other = {"val": ["elsewhere/a.png"], "test": ["elsewhere/b.png", "elsewhere/c.png"]}
    split = split_for(index, _model(other))
    assert split.test == split_for(index, SPLIT_CONFIG).test
    assert "none of this model's 2 test images are in this folder" in split.notes[-1]


def test_a_runs_settings_draw_the_same_split_as_a_dataclass_or_as_the_dict_its_checkpoint_keeps(synthetic_root):
    from dataclasses import asdict

    from cxr.train.config import TrainConfig

    index = index_dataset(synthetic_root)
    cfg = TrainConfig(test_per_class=3, val_per_class=2, seed=4)
    drawn = split_dataset(index, test_per_class=3, val_per_class=2, seed=4)
    assert split_for(index, cfg) == split_for(index, asdict(cfg)) == drawn
    assert split_for(index, {}) == split_dataset(index)  # settings left out: the recipe's defaults


def test_split_by_fraction(synthetic_root):
    split = split_dataset(index_dataset(synthetic_root), test_fraction=0.25, val_per_class=2)
    assert len(split.test) == 9


@pytest.mark.parametrize("name, key", [("person88_virus_161.png", "person88"), ("PERSON1_bacteria_2.jpeg", "person1"),
                                       ("COVID-1.png", "COVID-1.png"), ("person_x.png", "person_x.png")])
def test_a_file_names_patient_is_its_person_number_else_the_file_itself(name, key):
    assert patient_key(f"/data/Viral Pneumonia/images/{name}") == key


def _children(root, per_class: int, xrays_per_child: list[int]):
    """COVID and Normal of `per_class` files that name no patient; Viral Pneumonia as Kermany names it, child k
    with `xrays_per_child[k]` X-rays. Returns the index."""
    write_images(root / "COVID", per_class)
    write_images(root / "Normal", per_class)
    for child, n in enumerate(xrays_per_child):
        write_images(root / "Viral Pneumonia", n, prefix=f"person{child + 1}_virus")
    return index_dataset(root)


def test_a_patients_xrays_stay_on_one_side_of_the_split(tmp_path):
    index = _children(tmp_path, 20, [3] * 8)
    for seed in range(5):
        split = split_dataset(index, test_per_class=4, val_per_class=4, seed=seed)
        parts = [{(index.labels[i], patient_key(index.files[i])) for i in part}
                 for part in (split.train, split.val, split.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), seed
        # Whole patients of 3: one child (3 images), since a second would overshoot the 4 asked for by more than a
        # tenth; the note says so. Names without a patient split exactly as asked.
        assert sum(index.labels[i] == 2 for i in split.test) == 3 and "'viral': test 3 and validation 3" in split.notes[0]
        assert sum(index.labels[i] == 0 for i in split.test) == 4


def test_a_patient_with_many_xrays_trains_instead_of_filling_the_test_set(tmp_path):
    index = _children(tmp_path, 40, [30] + [1] * 38)  # person1 has 30 X-rays
    for seed in range(5):
        split = split_dataset(index, test_per_class=10, val_per_class=10, seed=seed)
        viral_test = [i for i in split.test if index.labels[i] == 2]
        assert len(viral_test) == 10 and all(patient_key(index.files[i]) != "person1" for i in viral_test), seed


def test_a_checkpoint_without_saved_names_gets_the_per_file_split_it_was_trained_with(tmp_path):
    index = _children(tmp_path, 12, [2] * 6)
    per_file = split_dataset(index, test_per_class=3, val_per_class=3, seed=0, by_patient=False)
    assert per_file != split_dataset(index, test_per_class=3, val_per_class=3, seed=0)  # the grouping matters here
    assert split_for(index, _model({})) == per_file  # its test images are ones it never trained on


def test_a_class_of_too_few_patients_is_refused_clearly(tmp_path):
    write_images(tmp_path / "COVID", 10)
    write_images(tmp_path / "Normal", 10)
    write_images(tmp_path / "Viral Pneumonia", 6, prefix="person1_virus")  # six X-rays of one child
    with pytest.raises(ValueError, match="'viral' has too few patients"):
        split_dataset(index_dataset(tmp_path), test_per_class=2, val_per_class=2)


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
