"""What the app knows beyond one browser tab: where the data and checkpoints are, the dataset index, loaded
models and the training job. One `AppContext` per server, handed to every handler; nothing module-global.

The dataset location is a server setting (command line or environment), never a field a visitor can type into:
on a public Space nobody may point the app at an arbitrary server path. Checkpoints are chosen by file name from
the checkpoints folder only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from cxr.train.checkpoint import (CheckpointInfo, checkpoint_version, list_checkpoints, prune_checkpoints,
                                  read_checkpoint_info, remove_orphans)
from cxr.data.index import SYNTHETIC_MARKER, DatasetIndex, Split, index_dataset, split_dataset, split_for
from cxr.data.cache import ImageCache
from cxr.data.lungs import has_masks
from cxr.data.download import DATASET_FOLDER, DownloadUnavailable, download_dataset, manual_instructions
from cxr.predict import Classifier, inference_device
from cxr.data.synthetic import make_synthetic
from cxr.train.presets import CORES

from .inference import InferenceQueue
from .job import TrainingJob
from .train_process import fit_in_process
from .labels import model_label
from .messages import no_model_yet
from .teacher import token_is_valid

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SIZE = 224  # resolution of the images the Data and Classify tabs show
MIN_KEY_LENGTH = 16  # a shorter teacher key is warned about at start: wrong keys are not rate-limited
MAX_CHECKPOINT_MB = 2000  # default cap on the checkpoints folder: about 40 Fast runs; a free Space has 50 GB of disk


@dataclass(frozen=True)
class AppSettings:
    data_dir: Path
    checkpoints_dir: Path
    synthetic: bool
    banner: str  # markdown shown above the tabs; "" when real data is in use
    teacher_key_digest: bytes = field(default=b"", repr=False)  # sha256 of the teacher key; b"": no key, all may train
    max_checkpoint_bytes: int = MAX_CHECKPOINT_MB * 2**20
    starter: bool = False  # train a starter model on first start when the folder holds none

    @property
    def teacher_only(self) -> bool:
        return bool(self.teacher_key_digest)


def digest_key(key: str) -> bytes:
    """The teacher key is kept only as a digest: it never reaches a page, a log line or a message."""
    return hashlib.sha256(key.encode()).digest() if key else b""


def resolve_settings(data: str | None = None, download: bool = False, root: Path = ROOT, teacher_key: str | None = None,
                     starter: bool | None = None, max_checkpoint_mb: float | None = None) -> AppSettings:
    """The server's settings, from arguments, else the environment (CXR_*), else defaults. The dataset: --data /
    CXR_DATA, else data/COVID-19_Radiography_Dataset, else (after a download, if asked for and possible) the real
    database, else a synthetic set made once under data/synthetic."""
    checkpoints = Path(os.environ.get("CXR_CHECKPOINTS", root / "checkpoints"))
    key = teacher_key if teacher_key is not None else os.environ.get("CXR_TEACHER_KEY", "")
    starter = starter if starter is not None else os.environ.get("CXR_STARTER", "1") not in ("0", "false", "")
    cap_mb = max_checkpoint_mb if max_checkpoint_mb is not None else float(os.environ.get("CXR_MAX_CHECKPOINT_MB", MAX_CHECKPOINT_MB))
    if key and len(key) < MIN_KEY_LENGTH:  # the page and API accept guesses as fast as they come: length is the lock
        log.warning("the teacher key has %d characters; on a public Space use %d or more (e.g. python -c \"import "
                    "secrets; print(secrets.token_urlsafe(16))\"): anyone may try keys as fast as the server answers",
                    len(key), MIN_KEY_LENGTH)
    extra = dict(teacher_key_digest=digest_key(key), starter=starter, max_checkpoint_bytes=int(cap_mb * 2**20))
    return _with_data(data, download, root, checkpoints, extra)


def _with_data(data: str | None, download: bool, root: Path, checkpoints: Path, extra: dict) -> AppSettings:
    data = data or os.environ.get("CXR_DATA")
    download = download or os.environ.get("CXR_DOWNLOAD", "") not in ("", "0", "false")
    if data:
        path = Path(data).expanduser()
        return AppSettings(path, checkpoints, _is_synthetic(path), _synthetic_banner("") if _is_synthetic(path) else "", **extra)
    default = root / "data" / DATASET_FOLDER
    if default.is_dir():
        return AppSettings(default, checkpoints, False, "", **extra)
    why = ""
    if download:
        try:
            log.info("downloading the COVID-19 Radiography Database (about 800 MB) ...")
            return AppSettings(download_dataset(root / "data"), checkpoints, False, "", **extra)
        except DownloadUnavailable as e:
            log.warning("download failed: %s", e)
            why = f"The download of the real database failed ({str(e).split(':')[0]}). "
    synthetic = root / "data" / "synthetic"
    if not (synthetic / SYNTHETIC_MARKER).exists():
        log.info("no dataset found: drawing a synthetic one at %s", synthetic)
        make_synthetic(synthetic, per_class=80, size=256, classes=("covid", "normal", "viral"))
    return AppSettings(synthetic, checkpoints, True, _synthetic_banner(why), **extra)


def _is_synthetic(path: Path) -> bool:
    return (path / SYNTHETIC_MARKER).exists()


def _synthetic_banner(why: str) -> str:
    return (
        f"**Synthetic data.** {why}These pictures are drawn by a program to look a little like chest X-rays; "
        "they are not medical images, and a model trained on them says nothing about real ones. "
        f"To use the real COVID-19 Radiography Database: {manual_instructions()} — or start the app with "
        "`--download` (or `CXR_DOWNLOAD=1` on a Space) where the internet is reachable."
    )


@dataclass(frozen=True)
class ModelEntry:
    """One model in the lists the tabs show: its file name, a label a person can tell apart, and its facts."""

    name: str
    label: str
    info: CheckpointInfo
    training: bool  # the running job is still writing it


class Memo:
    """Values computed once per key for the whole server, the `keep` most recently used kept. Callers asking for
    a key while it is being computed wait for that one computation instead of starting their own."""

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
        with lock:
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


class AppContext:
    def __init__(self, settings: AppSettings, job: TrainingJob | None = None, max_models: int = 2):
        self.settings = settings
        # The run trains in a process of its own (demo/train_process.py); Classify's model work runs batched in one
        # thread, on one core while a run trains (the run keeps the other) and on every core otherwise.
        self.job = job or TrainingJob(train=fit_in_process, on_end=self.tidy_checkpoints)
        self.inference = InferenceQueue(threads=lambda: 1 if self.job.active else CORES)
        self._models: OrderedDict[tuple[str, float], Classifier] = OrderedDict()
        self._max_models = max_models
        self._lock = threading.Lock()
        self._infos: dict[str, tuple[tuple[float, int], CheckpointInfo | None]] = {}
        self._splits: dict[tuple, Split] = {}
        self.janitor: Any = None  # the upload cache's janitor thread, started with the page (demo.limits)
        self.uploads: set[str] = set()  # paths visitors uploaded (Gradio's record, attached by demo.ui.build_app)
        self._memo = Memo(keep=8)  # analyses, reports, measurements: see `cached`
        self.figures = Memo(keep=4)  # the Train tab's curves, rendered once per change for every page (train_tab)

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """`compute()` once per key for the whole server (a few kept, least recently used dropped): an analysis of
        a model is made for the first visitor who asks and handed to every later one at once."""
        return self._memo.get(key, compute)

    @cached_property
    def scratch(self) -> Path:
        """A folder of this server's own for files it makes to hand out (report zips), made on first use."""
        return Path(tempfile.mkdtemp(prefix="cxr-server-"))

    @cached_property
    def index(self) -> DatasetIndex:
        """The dataset listing (file names only: quick even for 21,000 images)."""
        return index_dataset(self.settings.data_dir)

    @cached_property
    def split(self) -> Split:
        """The default split, the one a training run with default settings uses (the Data tab shows it)."""
        return split_dataset(self.index)

    def split_for(self, name: str) -> Split:
        """The split the model `name` was trained with (its saved test files, else rebuilt from its settings): its
        "test" images are ones it never trained on, whatever seed or test size it used."""
        ckpt = self.classifier(name).checkpoint
        config, saved = ckpt.config, ckpt.split
        key = (tuple(str(config.get(k)) for k in ("seed", "test_per_class", "test_fraction", "val_per_class")),
               tuple(saved.get("val", ())), tuple(saved.get("test", ())))
        with self._lock:
            if key not in self._splits:
                self._splits[key] = split_for(self.index, ckpt)
            return self._splits[key]

    @cached_property
    def has_masks(self) -> bool:
        """Every image has a lung mask beside it (the Kaggle v4 layout, and the synthetic set)."""
        return has_masks(self.index.files)

    def offers_hiding(self, mode: str) -> bool:
        """Whether the page offers this way of hiding the lungs: the masks only when the dataset has them."""
        return mode != "mask" or self.has_masks

    @cached_property
    def sample_cache(self) -> ImageCache:
        """Decoded images (and lung masks, when the data has them) for the Data and Classify tabs, filled as shown."""
        return ImageCache(self.index.files, SAMPLE_SIZE, masks=self.has_masks)

    # ------------------------------------------------------------------------------------------------ models
    def _info(self, path: Path) -> CheckpointInfo | None:
        """A checkpoint's facts, read once per version of the file (None for a file that is not a checkpoint)."""
        stamp = checkpoint_version(path)
        cached = self._infos.get(path.name)
        if cached is None or cached[0] != stamp:
            try:
                info = read_checkpoint_info(path)
            except ValueError:
                info = None
            self._infos[path.name] = (stamp, info)
            cached = self._infos[path.name]
        return cached[1]

    def running_checkpoint(self) -> str:
        """The file name the running job saves into ("" when none is running)."""
        snap = self.job.snapshot()
        return Path(snap.config.get("out", "")).name if snap.active else ""

    def models(self) -> list[ModelEntry]:
        """Every model in the checkpoints folder, newest first, each labelled once (no -last files)."""
        running, out = self.running_checkpoint(), []
        for path in list_checkpoints(self.settings.checkpoints_dir):
            try:
                info = self._info(path)
            except OSError:  # removed between the listing and the read
                continue
            if info is not None:
                out.append(ModelEntry(path.name, model_label(info, path.name == running, self.settings.synthetic), info, path.name == running))
        return out

    def no_model_yet(self, **kwargs: Any) -> str:
        """`messages.no_model_yet` for this server's run, and for who trains here (the teacher, with a key)."""
        return no_model_yet(self.job.snapshot(), teacher_only=self.settings.teacher_only, **kwargs)

    def label_of(self, name: str) -> str | None:
        """One finished model's label as `models` gives it, reading only that file's facts (the Train tab asks
        every second, for every page, once its run has ended)."""
        try:
            info = self._info(self.checkpoint_path(name))
        except (ValueError, OSError):
            return None
        return model_label(info, False, self.settings.synthetic) if info is not None else None

    def default_model(self, models: list[ModelEntry] | None = None) -> str | None:
        """For a new visitor: the best finished model by test accuracy; a running or unfinished one only when
        nothing else exists (the newest then)."""
        models = self.models() if models is None else models
        finished = [m for m in models if m.info.finished and not m.training]
        if finished:
            return max(finished, key=lambda m: (m.info.test_accuracy, m.info.mtime)).name
        return models[0].name if models else None

    def checkpoint_names(self) -> list[str]:
        return [m.name for m in self.models()]

    def checkpoint_path(self, name: str) -> Path:
        """A checkpoint by file name, only from the checkpoints folder."""
        if not isinstance(name, str) or not name or Path(name).name != name or not name.endswith(".pt"):
            raise ValueError("choose a model from the list")
        path = self.settings.checkpoints_dir / name
        if not path.is_file():
            raise ValueError("that model is no longer there: choose another from the list")
        return path

    def tidy_checkpoints(self) -> list[Path]:
        """Keep the folder under its cap: the oldest runs go first, never the running one or the default model."""
        keep = {n for n in (self.running_checkpoint(), self.default_model()) if n}
        removed = prune_checkpoints(self.settings.checkpoints_dir, self.settings.max_checkpoint_bytes, keep)
        for path in removed:
            log.info("removed old checkpoint %s (the folder is capped at %d MB)", path.name,
                     self.settings.max_checkpoint_bytes // 2**20)
        return removed

    def start_up(self) -> None:
        """Once per server start: remove the leftovers of killed saves, and keep the folder under its cap."""
        for path in remove_orphans(self.settings.checkpoints_dir):
            log.info("removed %s, left by a save that was interrupted", path.name)
        self.tidy_checkpoints()

    def start_starter(self) -> bool:
        """On a server with no model yet, train one with the machine's preset, so Classify works from the first
        visit (a free Space's disk is wiped on restart). False when a model exists or the starter is off."""
        import torch

        from cxr.train.checkpoint import checkpoint_name
        from cxr.train.presets import apply_preset, default_preset

        if not self.settings.starter or any(m.info.finished for m in self.models()):
            return False
        cfg = apply_preset(default_preset(torch.cuda.is_available()))
        cfg = replace(cfg, data=str(self.settings.data_dir), out=str(self.settings.checkpoints_dir / checkpoint_name()))
        log.info("no model yet: training a starter model (%s preset)", cfg.preset)
        self.job.start(cfg)
        return True

    def is_teacher(self, key: Any) -> bool:
        """True when no teacher key is set, or `key` is it (compared in constant time), or is a teacher token this
        server issued that has not expired (`demo.teacher`: what a teacher's page keeps instead of the key)."""
        if not self.settings.teacher_only:
            return True
        digest = self.settings.teacher_key_digest
        return isinstance(key, str) and (hmac.compare_digest(digest_key(key), digest) or token_is_valid(digest, key))

    def classifier(self, name: str) -> Classifier:
        """A loaded model, kept for the next request (a few at most; reloaded when the file changes)."""
        path = self.checkpoint_path(name)
        key = (name, checkpoint_version(path))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        clf = Classifier(path, inference_device())  # the GPU when there is one; outside the lock: loading takes a moment and other requests go on
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
