"""Checkpoints that describe themselves, written atomically and loaded without running any code.

A checkpoint holds everything inference needs (weights, class names, image size, normalisation) and everything a
person needs to trust it (the training config, metrics, time, library versions). `save_checkpoint` writes a
temporary file in the same folder and renames it over the target, so a crash mid-save leaves the old file whole.
`load_checkpoint` uses `torch.load(weights_only=True)`: a checkpoint is untrusted input, and a file that carries
code is refused rather than run.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from cxr.data.index import display_name
from cxr.train.calibration import Calibration
from cxr.train.model import ARCH, build_model
from cxr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

FORMAT = "cxr-checkpoint"
VERSION = 1
LAST_SUFFIX = "-last"  # the resumable twin of a best checkpoint: weights and optimiser state
NAME_FORMAT = "resnet18-%Y%m%d-%H%M%S"  # checkpoints/<this>.pt: sorts by time, says what it is


def checkpoint_name(when: float | None = None) -> str:
    """The file name a new run's best checkpoint gets: resnet18-YYYYmmdd-HHMMSS.pt (local time)."""
    return time.strftime(NAME_FORMAT, time.localtime(when)) + ".pt"


def checkpoint_paths(out: "str | Path" = "", folder: "str | Path" = "checkpoints") -> tuple[Path, Path]:
    """(best, last) paths for a run: `out` if given, else a new name in `folder`; the last one beside the best."""
    best = Path(out) if out else Path(folder) / checkpoint_name()
    return best, best.with_name(best.stem + LAST_SUFFIX + ".pt")


def is_last_file(path: "str | Path") -> bool:
    return Path(path).stem.endswith(LAST_SUFFIX)


@dataclass
class Checkpoint:
    model: nn.Module
    classes: tuple[str, ...]
    image_size: int
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    step: int = 0
    optimizer: dict[str, Any] | None = None
    path: Path | None = None
    synthetic: bool = False
    split: dict[str, list[str]] = field(default_factory=dict)  # its validation and test files by name (`data.split_names`)
    plan: dict[str, Any] = field(default_factory=dict)  # the size a budgeted run chose, and why (`cxr.train.plan.Plan`)
    ood: dict[str, Any] = field(default_factory=dict)  # the out-of-distribution check (`cxr.explain.ood`); {}: none
    # temperature scaling fitted at the end of the run (`cxr.train.calibration.Calibration`); {} in older files
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        """What the logits are divided by for calibrated probabilities (1 for a file without calibration)."""
        return Calibration.from_dict(self.calibration).temperature

    @property
    def class_names(self) -> list[str]:
        return [display_name(c) for c in self.classes]


def save_checkpoint(
    path: "str | Path",
    model: "nn.Module | dict[str, torch.Tensor]",
    classes: "tuple[str, ...] | list[str]",
    image_size: int,
    config: dict[str, Any],
    metrics: dict[str, Any],
    step: int = 0,
    optimizer: "torch.optim.Optimizer | dict[str, Any] | None" = None,
    synthetic: bool = False,
    split: "dict[str, list[str]] | None" = None,
    plan: "dict[str, Any] | None" = None,
    ood: "dict[str, Any] | None" = None,
    calibration: "dict[str, Any] | None" = None,
) -> Path:
    """Write a checkpoint to `path` atomically and return the path. `model` and `optimizer` may be given as their
    state dicts (a snapshot taken earlier, as `cxr.train.writer` does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": ARCH,
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "classes": list(classes),
        "image_size": int(image_size),
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "channels": 3, "source": "grayscale"},
        "config": config,
        "metrics": metrics,
        "step": int(step),
        "synthetic": bool(synthetic),
        "split": split or {},
        "plan": plan or {},
        "ood": ood or {},  # fitted once the run has ended: a checkpoint saved during training has none
        "calibration": calibration or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch_version": str(torch.__version__),
        "torchvision_version": str(torchvision.__version__),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _split_names(value: Any) -> dict[str, list[str]]:
    """A checkpoint's saved split names, or {} for an older file (or one whose field is not lists of names)."""
    if not isinstance(value, dict):
        return {}
    return {k: [str(n) for n in v] for k, v in value.items() if k in ("val", "test") and isinstance(v, list)}


def read_checkpoint_file(path: "str | Path") -> dict[str, Any]:
    """The raw checkpoint dictionary, refusing anything that is not plain data."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path.name} is a folder, not a checkpoint file: name the .pt file inside it")
    if not path.is_file():
        raise ValueError(f"checkpoint {path.name} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
        if head and head != b"PK\x03\x04":  # torch.save writes a zip archive; anything else is another kind of file
            raise ValueError(f"{path.name} is not a cxr model: it is not a PyTorch checkpoint file at all")
    try:
        # mmap: tensors stay on disk until used, so reading only the metadata of a large file is cheap.
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"checkpoint {path.name} was refused: it contains objects other than plain data (possibly code)") from e
    except Exception as e:  # truncated zip, wrong format, ...
        raise ValueError(f"checkpoint {path.name} is corrupt or truncated ({type(e).__name__})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path.name} is not a cxr checkpoint (train one with `python -m cxr train`)")
    if payload.get("version", 0) > VERSION:
        raise ValueError(f"checkpoint {path.name} is format version {payload['version']}; this cxr reads up to {VERSION}")
    return payload


def load_checkpoint(path: "str | Path", device: "str | torch.device" = "cpu") -> Checkpoint:
    """Load a checkpoint into a ready-to-use model in eval mode. Raises ValueError for a bad or mismatched file."""
    payload = read_checkpoint_file(path)
    name = Path(path).name
    classes = tuple(payload.get("classes") or ())
    state = payload.get("state_dict")
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ValueError(f"checkpoint {name} has no model weights")
    head = tuple(state["fc.weight"].shape)
    if head[0] != len(classes):
        raise ValueError(
            f"checkpoint {name} does not fit its class list: the head has {head[0]} outputs "
            f"but {len(classes)} classes are named ({', '.join(classes) or 'none'})"
        )
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"checkpoint {name} holds weights that are not numbers (NaN or infinite, in {bad[0]}): "
                         "its training diverged; train again with a lower learning rate")
    norm = payload.get("normalization", {})
    if norm and (tuple(norm.get("mean", IMAGENET_MEAN)) != IMAGENET_MEAN or tuple(norm.get("std", IMAGENET_STD)) != IMAGENET_STD):
        raise ValueError(f"checkpoint {name} was trained with a normalisation this cxr does not apply ({norm})")
    model, _ = build_model(len(classes), weights="none")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {name} does not match the {ARCH} architecture") from e
    model.to(device).eval()
    return Checkpoint(
        model=model,
        classes=classes,
        image_size=int(payload.get("image_size", 224)),
        config=payload.get("config", {}),
        metrics=payload.get("metrics", {}),
        created=payload.get("created", ""),
        step=int(payload.get("step", 0)),
        optimizer=payload.get("optimizer"),
        path=Path(path),
        synthetic=bool(payload.get("synthetic", False)),
        split=_split_names(payload.get("split")),
        plan=payload.get("plan") if isinstance(payload.get("plan"), dict) else {},
        ood=payload.get("ood") if isinstance(payload.get("ood"), dict) else {},
        calibration=payload.get("calibration") if isinstance(payload.get("calibration"), dict) else {},
    )


def checkpoint_version(path: "str | Path") -> tuple[int, int, int]:
    """What tells one version of a checkpoint file from the next: whatever is read from it (a loaded model, an
    analysis, a label) is reused while this is unchanged. Every save replaces the file (`os.replace`: a new inode),
    so a save within the file system's time resolution is noticed too."""
    stat = Path(path).stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def list_checkpoints(folder: "str | Path") -> list[Path]:
    """Best-checkpoint files in `folder` (not their -last twins), newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("*.pt") if p.is_file() and not is_last_file(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a list of models shows about one file, read without building the model."""

    name: str
    created: str
    preset: str
    classes: tuple[str, ...]
    image_size: int
    val_accuracy: float | None
    test_accuracy: float | None  # None until the run has finished and been tested
    hide_lungs: str
    synthetic: bool
    size_bytes: int
    mtime: float

    @property
    def finished(self) -> bool:
        return self.test_accuracy is not None


def read_checkpoint_info(path: "str | Path") -> CheckpointInfo:
    """The label-worthy facts of a checkpoint (ValueError for a file that is not one)."""
    path = Path(path)
    payload = read_checkpoint_file(path)
    metrics, config, stat = payload.get("metrics") or {}, payload.get("config") or {}, path.stat()
    return CheckpointInfo(
        name=path.name, created=str(payload.get("created", "")), preset=str(config.get("preset", "")),
        classes=tuple(payload.get("classes") or ()), image_size=int(payload.get("image_size", 224)),
        val_accuracy=metrics.get("val_accuracy"), test_accuracy=metrics.get("test_accuracy"),
        hide_lungs=str(config.get("hide_lungs", "none")), synthetic=bool(payload.get("synthetic", False)),
        size_bytes=stat.st_size, mtime=stat.st_mtime,
    )


def remove_orphans(folder: "str | Path") -> list[Path]:
    """Delete the temporary files of saves that were killed half-way (call at start-up, when no save is running)."""
    folder = Path(folder)
    orphans = [p for p in folder.glob(".*.pt.*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def prune_checkpoints(folder: "str | Path", max_bytes: int, keep: "set[str] | frozenset[str]" = frozenset()) -> list[Path]:
    """Delete the oldest checkpoints (with their -last twins) until the folder holds at most `max_bytes`; files
    named in `keep` (the running run's, the default model) are never deleted. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = sorted((p for p in folder.glob("*.pt") if p.is_file()), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed = []
    for p in files:  # oldest first
        if total <= max_bytes:
            break
        owner = p.with_name(p.stem[: -len(LAST_SUFFIX)] + ".pt") if is_last_file(p) else p
        if owner.name in keep:
            continue
        total -= p.stat().st_size
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
