"""The dataset: find the images of each class on disk and split them.

`index_dataset` reads the COVID-19 Radiography Database in the layouts people actually have: the current Kaggle
release (`COVID/images/*.png`, masks beside), the first release (flat `COVID-19/`, `NORMAL/`, ...), or any
class-folder tree. It only lists files, so it is quick even on the 21,000-image database. `split_for` gives the
split of a model or a run (its saved test files, else drawn from its settings), and `split_dataset` draws a
deterministic, stratified train / validation / test split from a seed. Decoding the pixels and serving batches is
`cxr.data.cache`'s.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from cxr.data.images import IMAGE_SUFFIXES

# Class key -> normalised folder names it may appear under (lower case, no spaces, dashes or underscores).
CLASS_ALIASES = {
    "covid": ("covid", "covid19"),
    "normal": ("normal",),
    "viral": ("viralpneumonia", "viral"),
    "lung_opacity": ("lungopacity",),
}
DISPLAY_NAMES = {"covid": "COVID", "normal": "Normal", "viral": "Viral Pneumonia", "lung_opacity": "Lung Opacity"}
DEFAULT_CLASSES = ("covid", "normal", "viral")  # the three classes the recipe uses
SYNTHETIC_MARKER = "SYNTHETIC.txt"  # written by make-synthetic; anything shown from such data says so
TEST_PER_CLASS = 30  # the recipe's test set: 30 images of each class
VAL_PER_CLASS = 30  # validation images per class, scored during training


def display_name(key: str) -> str:
    return DISPLAY_NAMES.get(key, key)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def parse_classes(text: "str | Sequence[str]") -> tuple[str, ...]:
    """'covid,normal,viral' -> ('covid', 'normal', 'viral'); at least two distinct keys."""
    keys = [k.strip().lower() for k in (text.split(",") if isinstance(text, str) else text) if k.strip()]
    if len(keys) < 2 or len(set(keys)) != len(keys):
        raise ValueError(f"--classes needs at least two distinct class keys, e.g. covid,normal,viral (got {text!r})")
    return tuple(keys)


@dataclass(frozen=True)
class DatasetIndex:
    root: Path
    classes: tuple[str, ...]
    class_dirs: tuple[Path, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]
    layout: str  # "kaggle-v4" (class/images/*), "kaggle-v1" (flat class folders) or "class-folders"
    synthetic: bool

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for label in self.labels:
            out[self.classes[label]] += 1
        return out


def _class_folders(root: Path) -> dict[str, Path]:
    return {_norm(p.name): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _find_root(root: Path, classes: Sequence[str]) -> Path:
    """The folder holding the class folders: `root` itself or a folder up to two levels below it (archives
    unpack into `COVID-19_Radiography_Dataset/`)."""
    candidates = [root] + [p for p in sorted(root.glob("*")) if p.is_dir()] + [p for p in sorted(root.glob("*/*")) if p.is_dir()]
    for cand in candidates:
        folders = _class_folders(cand)
        if all(any(a in folders for a in CLASS_ALIASES.get(c, (_norm(c),))) for c in classes):
            return cand
    return root


def _list_images(folder: Path) -> list[Path]:
    """Every image file under `folder` (following links, each real folder once), skipping lung masks."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or the same folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if d.lower() != "masks" and not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return found


def index_dataset(root: "str | Path", classes: Sequence[str] = DEFAULT_CLASSES) -> DatasetIndex:
    """List the images of each class under `root`. Raises ValueError naming what is missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist (see docs/recipe.md: Getting the dataset)")
    classes = parse_classes(classes)
    base = _find_root(root, classes)
    folders = _class_folders(base)
    class_dirs, files, labels = [], [], []
    for label, key in enumerate(classes):
        match = next((folders[a] for a in CLASS_ALIASES.get(key, (_norm(key),)) if a in folders), None)
        if match is None:
            have = ", ".join(p.name for p in folders.values()) or "none"
            raise ValueError(f"no folder for class '{key}' under {root} (folders found: {have})")
        images_dir = match / "images" if (match / "images").is_dir() else match
        items = _list_images(images_dir)
        if not items:
            raise ValueError(f"class '{key}' has no images in {images_dir} (looked for {', '.join(IMAGE_SUFFIXES)})")
        class_dirs.append(match)
        files += items
        labels += [label] * len(items)
    if all((d / "images").is_dir() for d in class_dirs):
        layout = "kaggle-v4"
    elif any(_norm(d.name) == "covid19" for d in class_dirs):
        layout = "kaggle-v1"
    else:
        layout = "class-folders"
    synthetic = (base / SYNTHETIC_MARKER).exists() or (root / SYNTHETIC_MARKER).exists()
    return DatasetIndex(base, classes, tuple(class_dirs), tuple(files), tuple(labels), layout, synthetic)


@dataclass(frozen=True)
class Split:
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    notes: tuple[str, ...] = ()  # what had to be shrunk for small classes

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# Viral Pneumonia X-rays under their original paediatric-collection names (Kermany et al.; the sample keeps them)
# say which child each shows: "person<N>_virus_<M>.png". The Kaggle database renamed them "Viral Pneumonia-<n>.png",
# and COVID and Normal names carry no patient either: each of those files is its own group.
_PATIENT = re.compile(r"^(person\d+)_", re.IGNORECASE)


def patient_key(path: "str | Path") -> str:
    """Which patient a file shows, as far as its name says ("person88" for person88_virus_161.png), else the file
    itself: images of one patient must not fall on both sides of a split, or the test set checks recognition of
    people the model has already seen."""
    name = Path(path).name
    m = _PATIENT.match(name)
    return m.group(1).lower() if m else name


def _by_patient(ids: list[int], index: DatasetIndex) -> list[list[int]]:
    """`ids` in groups of one patient each, in the order each patient first appears."""
    groups: dict[str, list[int]] = {}
    for i in ids:
        groups.setdefault(patient_key(index.files[i]), []).append(i)
    return list(groups.values())


def _take(groups: list[list[int]], n: int) -> tuple[list[int], list[list[int]]]:
    """Whole patients, in order, until `n` images: (their ids, the groups left, in order). A patient who would
    overshoot `n` by more than a tenth is left for the next part (a child with 60 X-rays must not become the whole
    test set), so a part can end a little over or under `n`. One image per group takes exactly the first `n`."""
    limit = n + max(1, n // 10)
    taken, left = [], []
    for group in groups:
        if len(taken) < n and len(taken) + len(group) <= limit:
            taken += group
        else:
            left.append(group)
    return taken, left


def split_dataset(
    index: DatasetIndex,
    test_per_class: int = TEST_PER_CLASS,
    test_fraction: float | None = None,
    val_per_class: int = VAL_PER_CLASS,
    seed: int = 0,
    by_patient: bool = True,
) -> Split:
    """Stratified split, the same for the same seed and files. Test: `test_per_class` images of each class (the
    recipe's 30), or `test_fraction` of each; validation: `val_per_class` of each class from what is left; the rest
    trains. No file, and no patient a file name identifies (`patient_key`), is in two parts: a patient's X-rays
    go together, so a part can hold a few more or fewer images than asked. `by_patient=False` splits file by file
    (how checkpoints from before the grouping were split). A class too small for both is shrunk to a fifth each,
    with a note."""
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if test_per_class < 1 or val_per_class < 1:
        raise ValueError("test_per_class and val_per_class must be at least 1")
    rng = random.Random(seed)
    train, val, test, notes = [], [], [], []
    for label, key in enumerate(index.classes):
        ids = [i for i, lab in enumerate(index.labels) if lab == label]
        rng.shuffle(ids)
        n = len(ids)
        if n < 3:
            raise ValueError(
                f"class '{key}' has {n} image{'s' if n != 1 else ''}; at least 3 are needed (train, validation, test)"
            )
        n_test = round(n * test_fraction) if test_fraction is not None else test_per_class
        n_val = val_per_class
        if n_test + n_val > n - 1:
            n_test = n_val = max(1, n // 5)
            notes.append(f"class '{key}' has only {n} images: test and validation use {n_test} each")
        n_test = max(1, n_test)
        # One image each where names say nothing (or by_patient is off): the plain shuffled order.
        groups = _by_patient(ids, index) if by_patient else [[i] for i in ids]
        class_test, groups = _take(groups, n_test)
        class_val, groups = _take(groups, n_val)
        if not (class_test and class_val and groups):
            raise ValueError(f"class '{key}' has too few patients for a training, validation and test part "
                             "(its file names say which X-rays show one patient, and a patient is never split)")
        if len(class_test) < n_test or len(class_val) < n_val:
            notes.append(f"class '{key}': test {len(class_test)} and validation {len(class_val)} images, not "
                         f"{n_test} and {n_val}: patients with many X-rays are kept whole, in training")
        test += class_test
        val += class_val
        train += [i for g in groups for i in g]
    return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), tuple(notes))


def path_below(root: "str | Path", file: "str | Path") -> str:
    """`file` as a path below `root`, with forward slashes ("COVID/images/COVID-12.png"): the name that finds the
    same image in another copy of the folder, and says nothing of where this one sits. Its bare name if outside."""
    path = Path(file)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def relative_name(index: DatasetIndex, i: int) -> str:
    """File `i` of the index as a path below the dataset's root (`path_below`)."""
    return path_below(index.root, index.files[i])


def split_names(index: DatasetIndex, split: Split) -> dict[str, list[str]]:
    """The validation and test files of a split by name, as a checkpoint keeps them (`split_for` reads them)."""
    return {part: [relative_name(index, i) for i in getattr(split, part)] for part in ("val", "test")}


@runtime_checkable
class TrainedModel(Protocol):
    """What a model's split is read from: its run's settings and the files it held out by name (a `Checkpoint`)."""

    config: Mapping[str, Any]
    split: Mapping[str, list[str]]


def split_for(index: DatasetIndex, model: "TrainedModel | Mapping[str, Any] | object") -> Split:
    """The split of a model, or of a run about to train: the one way to get one (`split_dataset` draws it).

    - A checkpoint (`config` and `split`): the validation and test files it saved by name (`split_names`), so its
      test images stay the same after files were added to or removed from the folder, where redrawing from the
      seed would shuffle images it trained on into its test set. Notes say when saved test images are missing
      here, and when none are (a model of other data: its test split here can only be drawn from its seed). A
      checkpoint from before names were saved gets its seed's split drawn file by file, as it was trained.
    - A run's settings (a `TrainConfig`, or the dict a checkpoint stores): drawn from its seed and sizes."""
    if isinstance(model, Mapping):
        return _draw(index, model)
    if not isinstance(model, TrainedModel):
        return _draw(index, vars(model))
    saved = model.split
    if not saved or not saved.get("test"):
        return _draw(index, model.config, by_patient=False)
    where = {relative_name(index, i): i for i in range(len(index.files))}
    val = tuple(sorted({where[n] for n in saved.get("val", []) if n in where}))
    test = tuple(sorted({where[n] for n in saved["test"] if n in where}))
    n_saved = len(set(saved["test"]))
    if not test:
        drawn = _draw(index, model.config)
        return Split(drawn.train, drawn.val, drawn.test, drawn.notes + (
            f"none of this model's {n_saved} test images are in this folder (it was trained on other data): its test "
            "images here are drawn from its seed, and may include images like the ones it trained on",))
    notes = () if len(test) == n_saved else (
        f"{n_saved - len(test)} of this model's {n_saved} test images are not in this folder: the other {len(test)} "
        "are used",)
    held = set(val) | set(test)
    return Split(tuple(i for i in range(len(index.files)) if i not in held), val, test, notes)


def _draw(index: DatasetIndex, config: Mapping[str, Any], by_patient: bool = True) -> Split:
    """`split_dataset` with a run's settings (defaults for any it lacks)."""
    return split_dataset(
        index,
        int(config.get("test_per_class", TEST_PER_CLASS)),
        config.get("test_fraction"),
        int(config.get("val_per_class", VAL_PER_CLASS)),
        int(config.get("seed", 0)),
        by_patient,
    )
