"""The models the app offers: the checkpoints folder listed and labelled, a model chosen by file name and loaded
once, and `Memo`, the one server-wide cache every other cache of the app is made of.

Checkpoints are chosen by file name from the checkpoints folder only. Each thing read from a file (its facts, the
loaded model) is cached under the file's name and modification time, so a file that changed is read again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cxr.predict import Classifier, inference_device
from cxr.train.checkpoint import CheckpointInfo, list_checkpoints, read_checkpoint_info

from .labels import model_label


class Memo:
    """Values computed once per key for the whole server, the `keep` most recently used kept. Callers asking for
    a key while it is being computed wait for that one computation instead of starting their own; a computation
    that raises is not kept, and the next caller tries again."""

    def __init__(self, keep: int):
        self.keep = keep
        self._values: OrderedDict[tuple, Any] = OrderedDict()
        self._locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # outside the memo's lock: a slow computation holds up only the callers of its own key
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = compute()
            with self._lock:
                self._values[key] = value
                while len(self._values) > self.keep:
                    old, _ = self._values.popitem(last=False)
                    self._locks.pop(old, None)
            return value


@dataclass(frozen=True)
class ModelEntry:
    """One model in the lists the tabs show: its file name, a label a person can tell apart, and its facts."""

    name: str
    label: str
    info: CheckpointInfo
    training: bool  # the running job is still writing it


class ModelRegistry:
    """The checkpoints `folder` as the tabs see it. `synthetic`: all of the server's data is synthetic (its banner
    says so once, so the labels need not)."""

    def __init__(self, folder: Path, synthetic: bool, max_models: int = 2):
        self.folder, self.synthetic = folder, synthetic
        self._infos = Memo(keep=512)  # facts are small; the folder is capped at a few dozen models
        self._models = Memo(keep=max_models)  # ~45 MB each

    def path(self, name: str) -> Path:
        """A checkpoint by file name, only from the checkpoints folder."""
        if not isinstance(name, str) or not name or Path(name).name != name or not name.endswith(".pt"):
            raise ValueError("choose a model from the list")
        path = self.folder / name
        if not path.is_file():
            raise ValueError("that model is no longer there: choose another from the list")
        return path

    def info(self, path: Path) -> CheckpointInfo | None:
        """A checkpoint's facts, read once per version of the file (None for a file that is not a checkpoint)."""
        stat = path.stat()

        def read() -> CheckpointInfo | None:
            try:
                return read_checkpoint_info(path)
            except ValueError:
                return None
        return self._infos.get((path.name, stat.st_mtime, stat.st_size), read)

    def models(self, running: str = "") -> list[ModelEntry]:
        """Every model in the folder, newest first, each labelled once (no -last files). `running`: the file the
        training job is writing."""
        out = []
        for path in list_checkpoints(self.folder):
            try:
                info = self.info(path)
            except OSError:  # removed between the listing and the read
                continue
            if info is not None:
                training = path.name == running
                out.append(ModelEntry(path.name, model_label(info, training, self.synthetic), info, training))
        return out

    def label_of(self, name: str) -> str | None:
        """One finished model's label as `models` gives it, reading only that file's facts."""
        try:
            info = self.info(self.path(name))
        except (ValueError, OSError):
            return None
        return model_label(info, False, self.synthetic) if info is not None else None

    @staticmethod
    def default_model(models: list[ModelEntry]) -> str | None:
        """For a new visitor: the best finished model by test accuracy; a running or unfinished one only when
        nothing else exists (the newest then)."""
        finished = [m for m in models if m.info.finished and not m.training]
        if finished:
            return max(finished, key=lambda m: (m.info.test_accuracy, m.info.mtime)).name
        return models[0].name if models else None

    def classifier(self, name: str) -> Classifier:
        """A loaded model, kept for the next request (a few at most; reloaded when the file changes). Two requests
        for a model not loaded yet wait for one load."""
        path = self.path(name)
        return self._models.get((name, path.stat().st_mtime), lambda: Classifier(path, inference_device()))  # the GPU when there is one
