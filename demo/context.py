"""What the app knows beyond one browser tab: where the data and checkpoints are, the dataset index, loaded
models and the training job. One `AppContext` per server, handed to every handler; nothing module-global.

The dataset location is a server setting (command line or environment), never a field a visitor can type into:
on a public Space nobody may point the app at an arbitrary server path. Checkpoints are chosen by file name from
the checkpoints folder only.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from cxr.checkpoint import list_checkpoints
from cxr.data import DatasetIndex, ImageCache, Split, index_dataset, split_dataset
from cxr.download import DATASET_FOLDER, DownloadUnavailable, download_dataset, manual_instructions
from cxr.predict import Classifier
from cxr.synthetic import make_synthetic

from .job import TrainingJob

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SIZE = 224  # resolution of the images the Data and Classify tabs show


@dataclass(frozen=True)
class AppSettings:
    data_dir: Path
    checkpoints_dir: Path
    synthetic: bool
    banner: str  # markdown shown above the tabs; "" when real data is in use


def resolve_settings(data: str | None = None, download: bool = False, root: Path = ROOT) -> AppSettings:
    """Choose the dataset: --data / CXR_DATA, else data/COVID-19_Radiography_Dataset, else (after a download, if
    asked for and possible) the real database, else a synthetic set made once under data/synthetic."""
    checkpoints = Path(os.environ.get("CXR_CHECKPOINTS", root / "checkpoints"))
    data = data or os.environ.get("CXR_DATA")
    download = download or os.environ.get("CXR_DOWNLOAD", "") not in ("", "0", "false")
    if data:
        path = Path(data).expanduser()
        return AppSettings(path, checkpoints, _is_synthetic(path), _synthetic_banner("") if _is_synthetic(path) else "")
    default = root / "data" / DATASET_FOLDER
    if default.is_dir():
        return AppSettings(default, checkpoints, False, "")
    why = ""
    if download:
        try:
            log.info("downloading the COVID-19 Radiography Database (about 800 MB) ...")
            return AppSettings(download_dataset(root / "data"), checkpoints, False, "")
        except DownloadUnavailable as e:
            log.warning("download failed: %s", e)
            why = f"The download of the real database failed ({str(e).split(':')[0]}). "
    synthetic = root / "data" / "synthetic"
    if not (synthetic / "SYNTHETIC.txt").exists():
        log.info("no dataset found: drawing a synthetic one at %s", synthetic)
        make_synthetic(synthetic, per_class=80, size=256, classes=("covid", "normal", "viral"))
    return AppSettings(synthetic, checkpoints, True, _synthetic_banner(why))


def _is_synthetic(path: Path) -> bool:
    return (path / "SYNTHETIC.txt").exists()


def _synthetic_banner(why: str) -> str:
    return (
        f"**Synthetic data.** {why}These pictures are drawn by a program to look a little like chest X-rays; "
        "they are not medical images, and a model trained on them says nothing about real ones. "
        f"To use the real COVID-19 Radiography Database: {manual_instructions()} — or start the app with "
        "`--download` (or `CXR_DOWNLOAD=1` on a Space) where the internet is reachable."
    )


class AppContext:
    def __init__(self, settings: AppSettings, job: TrainingJob | None = None, max_models: int = 2):
        self.settings = settings
        self.job = job or TrainingJob()
        self._models: OrderedDict[tuple[str, float], Classifier] = OrderedDict()
        self._max_models = max_models
        self._lock = threading.Lock()

    @cached_property
    def index(self) -> DatasetIndex:
        """The dataset listing (file names only: quick even for 21,000 images)."""
        return index_dataset(self.settings.data_dir)

    @cached_property
    def split(self) -> Split:
        """The default split, the one a training run with default settings uses."""
        return split_dataset(self.index)

    @cached_property
    def sample_cache(self) -> ImageCache:
        """Decoded images for the Data and Classify tabs, filled as they are shown."""
        return ImageCache(self.index.files, SAMPLE_SIZE)

    def checkpoint_names(self) -> list[str]:
        return [p.name for p in list_checkpoints(self.settings.checkpoints_dir)]

    def checkpoint_path(self, name: str) -> Path:
        """A checkpoint by file name, only from the checkpoints folder."""
        if not name or Path(name).name != name or not name.endswith(".pt"):
            raise ValueError("choose a checkpoint from the list")
        path = self.settings.checkpoints_dir / name
        if not path.is_file():
            raise ValueError(f"checkpoint {name} is no longer there: refresh the list")
        return path

    def classifier(self, name: str) -> Classifier:
        """A loaded model, kept for the next request (a few at most; reloaded when the file changes)."""
        path = self.checkpoint_path(name)
        key = (name, path.stat().st_mtime)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        clf = Classifier(path)  # outside the lock: loading takes a moment and other requests go on
        with self._lock:
            self._models[key] = clf
            while len(self._models) > self._max_models:
                self._models.popitem(last=False)
        return clf

    def bind(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """`handler(ctx, *inputs)` as a function of the inputs alone, keeping its signature and type hints so
        Gradio still sees parameters such as `evt: gr.SelectData` (functools.partial would hide them)."""

        @functools.wraps(handler)
        def bound(*args: Any, **kwargs: Any) -> Any:
            return handler(self, *args, **kwargs)

        signature = inspect.signature(handler)
        bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
        return bound
