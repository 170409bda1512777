"""Shared fixtures: a tiny synthetic dataset written to a temp dir, and a checkpoint trained on it in seconds.

Nothing here downloads: weights start random (or from files the tests write), data is drawn procedurally.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cxr.data.synthetic import make_synthetic
from cxr.train.events import Done
from cxr.train.loop import TrainConfig, fit
from cxr.data.transforms import AugmentConfig

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # tests never phone home
torch.set_num_threads(min(2, os.cpu_count() or 1))
pytest_plugins = ["tests.demo_fixtures"]  # the app fixtures: ctx, server
SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "cxr-sample"


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path_factory, monkeypatch):
    """No test may find (or download into) the user's real torch hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))
    # Nor the machine's speed timings (cxr.train.plan): a loaded test machine would plan every later run too small.
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cxr-cache"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """12 images per class, all four classes, 64 px: enough to split and to learn something."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), per_class=12, size=64, seed=0)


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A config that trains in about a second on CPU."""
    cfg = TrainConfig(
        data=str(data), weights="none", image_size=64, batch_size=8, lr=1e-3, eval_every=3, max_steps=6,
        test_per_class=3, val_per_class=3, seed=0, out=str(out), augment=AugmentConfig(), epochs=50,
        target_accuracy=1.0,
    )
    return replace(cfg, **overrides)


@pytest.fixture(scope="session")
def trained_checkpoint(synthetic_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    events = list(fit(tiny_config(synthetic_root, out, max_steps=6)))
    assert isinstance(events[-1], Done)
    return Path(events[-1].checkpoint)
