"""The presets: the machine's default everywhere, and settings given by hand on top of a preset."""

from dataclasses import replace

import pytest
import torch

from cxr.cli import main as cli, train as cli_train
from cxr.train.presets import PRESETS, apply_preset, default_preset, presets_for
from cxr.data.transforms import AugmentConfig


def _config(*flags):
    return cli_train.train_config(cli.build_parser().parse_args(["train", "--data", "xrays", *flags]))


def _preset(name):
    return replace(apply_preset(name), data="xrays")


def test_the_default_preset_follows_the_machine():
    assert (default_preset(cuda=True), default_preset(cuda=False)) == ("gpu", "fast-cpu")
    assert "gpu" not in presets_for(cuda=False) and set(presets_for(cuda=True)) == set(PRESETS)


@pytest.mark.parametrize("cuda, expected", [(False, "fast-cpu"), (True, "gpu")])
def test_train_without_a_preset_uses_the_machines_one(monkeypatch, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = _config()
    assert cfg.preset == expected and cfg == _preset(expected)
    assert _config("--preset", "recipe") == _preset("recipe")  # the course's settings, on any machine
    assert _config("--device", "cpu").preset == "fast-cpu"  # a CPU run asked for on a GPU machine


def test_augmentations_named_by_hand_keep_the_presets_strengths(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fast = apply_preset("fast-cpu").augment
    cfg = _config("--augment", "hflip,scale,rotate")
    assert (cfg.augment.hflip, cfg.augment.scale, cfg.augment.translate) == (True, fast.scale, 0.0)
    assert cfg.augment.rotate == AugmentConfig().rotate
    assert _config("--augment", "none").augment == AugmentConfig.none()


def test_a_presets_description_is_made_from_its_settings(monkeypatch):
    from cxr.train import presets

    assert "112 px at most" in presets.describe("fast-cpu") and "batch 32" in presets.describe("fast-cpu")
    monkeypatch.setitem(presets.PRESETS, "recipe", {**presets.PRESETS["recipe"], "batch_size": 12})
    assert "batch 12" in presets.describe("recipe")  # a changed value changes the words, with no second copy
