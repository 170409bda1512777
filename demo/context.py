"""What the app knows beyond one browser tab, handed to every handler: the server's settings (`demo.settings`), the
models (`demo.registry`), the dataset and its default split, the training job, and the server-wide caches. One
`AppContext` per server; nothing module-global.

`bind` turns a handler written as `handler(ctx, *inputs)` (a named module-level function a test calls directly)
into the function of its inputs that Gradio calls.
"""

from __future__ import annotations

import functools
import inspect
import logging
import tempfile
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from cxr.data.cache import ImageCache
from cxr.data.index import DatasetIndex, Split, index_dataset, split_dataset, split_for
from cxr.data.lungs import has_masks
from cxr.predict import Classifier
from cxr.train.checkpoint import prune_checkpoints, remove_orphans
from cxr.train.presets import CORES

from .auth import may_train
from .inference import InferenceQueue, inference_threads
from .job import TrainingJob
from .train_process import fit_in_process
from .messages import no_model_yet
from .registry import Memo, ModelEntry, ModelRegistry
from .settings import AppSettings

log = logging.getLogger(__name__)
SAMPLE_SIZE = 224  # px: the images the Data, Train and Evaluate tabs show (sharp four to a row, 150 KB an overlay)


class AppContext:
    def __init__(self, settings: AppSettings, job: TrainingJob | None = None, max_models: int = 2):
        self._max_models = max_models
        self.settings = settings
        # The run trains in a process of its own (demo/train_process.py); Classify's model work runs batched in one
        # thread, on one core while a run trains (the run keeps the other) and on every core otherwise.
        self.job = job or TrainingJob(train=fit_in_process, on_end=self.tidy_checkpoints)
        self.inference = InferenceQueue(threads=lambda: inference_threads(self.job.active, CORES))
        self.janitor: Any = None  # the upload cache's janitor thread, started with the page (demo.limits)
        self.uploads: set[str] = set()  # paths visitors uploaded (Gradio's record, attached by demo.ui.build_app)
        self._memo = Memo(keep=8)  # analyses, reports, measurements: see `cached`
        self._splits = Memo(keep=16)  # each model's split (see `split_for`)
        self.figures = Memo(keep=4)  # the Train tab's curves, rendered once per change for every page (train_tab)

    @property
    def settings(self) -> AppSettings:
        return self._settings

    @settings.setter
    def settings(self, value: AppSettings) -> None:
        """New settings (tests change the cap or the key) come with a registry of their checkpoints folder."""
        self._settings = value
        self.registry = ModelRegistry(value.checkpoints_dir, value.synthetic, self._max_models)

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """`compute()` once per key for the whole server (a few kept, least recently used dropped): an analysis of
        a model is made for the first visitor who asks and handed to every later one at once."""
        return self._memo.get(key, compute)

    @cached_property
    def scratch(self) -> Path:
        """A folder of this server's own for files it makes to hand out (report zips), made on first use."""
        return Path(tempfile.mkdtemp(prefix="cxr-server-"))

    # ------------------------------------------------------------------------------------------------ data
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
        return self._splits.get(key, lambda: split_for(self.index, ckpt))

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
    def running_checkpoint(self) -> str:
        """The file name the running job saves into ("" when none is running)."""
        snap = self.job.snapshot()
        return Path(snap.config.get("out", "")).name if snap.active else ""

    def models(self) -> list[ModelEntry]:
        """Every model in the checkpoints folder, newest first, the one training marked as such."""
        return self.registry.models(self.running_checkpoint())

    def default_model(self, models: list[ModelEntry] | None = None) -> str | None:
        return self.registry.default_model(self.models() if models is None else models)

    def label_of(self, name: str) -> str | None:
        return self.registry.label_of(name)

    def checkpoint_names(self) -> list[str]:
        return [m.name for m in self.models()]

    def checkpoint_path(self, name: str) -> Path:
        return self.registry.path(name)

    def classifier(self, name: str) -> Classifier:
        return self.registry.classifier(name)

    def no_model_yet(self, **kwargs: Any) -> str:
        """`messages.no_model_yet` for this server's run, and for who trains here (the teacher, with a key)."""
        return no_model_yet(self.job.snapshot(), teacher_only=self.settings.teacher_only, **kwargs)

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

    # ------------------------------------------------------------------------------------------------ handlers
    def is_teacher(self, key: Any) -> bool:
        """Whether a request with `key` may start, stop and add models (`demo.auth.may_train`)."""
        return may_train(self.settings.teacher_key_digest, key)

    def bind(self, handler: Callable[..., Any], *fixed: Any) -> Callable[..., Any]:
        """`handler(ctx, *fixed, *inputs)` as a function of the inputs alone (`fixed`: e.g. the tab's components,
        for a handler that returns a dict keyed by them), keeping its signature and type hints so Gradio still
        sees parameters such as `evt: gr.SelectData` (functools.partial would hide them)."""

        @functools.wraps(handler)
        def bound(*args: Any, **kwargs: Any) -> Any:
            return handler(self, *fixed, *args, **kwargs)

        signature = inspect.signature(handler)
        bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1 + len(fixed):])
        return bound
