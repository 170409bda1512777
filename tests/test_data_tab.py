"""The Data tab's augmentation browser called directly: it must show what the Train tab's first preset trains with."""

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch

from cxr.train.presets import apply_preset, default_preset
from demo import data_tab
from demo.labels import augmentation_choices, preset_title

MACHINES = [pytest.param(False, id="cpu"), pytest.param(True, id="cuda")]


@pytest.fixture
def cuda(request, monkeypatch):
    """The machine the tab believes it runs on (CPU: Fast (CPU); CUDA: GPU), whatever this one is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    return request.param


def component(demo: gr.Blocks, elem_id: str) -> dict:
    return next(c["props"] for c in demo.get_config_file()["components"] if c["props"].get("elem_id") == elem_id)


def recorded_configs(monkeypatch) -> list:
    """Every AugmentConfig the tab hands to the training transform, in order."""
    seen = []

    def recording(images, cfg, *args, **kwargs):
        seen.append(cfg)
        return real(images, cfg, *args, **kwargs)

    real = data_tab.to_model_input
    monkeypatch.setattr(data_tab, "to_model_input", recording)
    return seen


@pytest.mark.parametrize("cuda", MACHINES, indirect=True)
def test_switches_start_as_the_train_tabs_first_preset_trains(ctx, cuda):
    preset = apply_preset(default_preset(cuda))
    with gr.Blocks() as demo:
        data_tab.build(ctx)
    box = component(demo, "aug_box")
    assert box["value"] == list(preset.augment.enabled())
    # Labelled from the preset's config by the Train tab's own function: Fast's zoom reads ±5 %, not the recipe's 10.
    assert [tuple(c) for c in box["choices"]] == augmentation_choices(preset.augment)
    assert preset_title(preset.preset) in component(demo, "aug_note")["value"]


def test_on_a_cpu_the_switches_are_fast_cpus_gentle_mirror_zoom_and_shift(ctx, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with gr.Blocks() as demo:
        data_tab.build(ctx)
    box = component(demo, "aug_box")
    labels = dict((name, label) for label, name in box["choices"])
    assert box["value"] == ["hflip", "scale", "translate"]
    assert (labels["scale"], labels["translate"]) == ("zoom ±5%", "shift ±3%")
    note = component(demo, "aug_note")["value"]
    assert "Fast (CPU)" in note and "zoom ±5%" in note and "rotate" not in note


@pytest.mark.parametrize("cuda", MACHINES, indirect=True)
def test_redrawing_uses_the_presets_strengths_for_the_switches_on(ctx, cuda, monkeypatch):
    seen = recorded_configs(monkeypatch)
    preset = apply_preset(default_preset(cuda)).augment
    augs = ["scale", "rotate"]
    _, ids, _ = data_tab.new_batch(ctx, augs)
    data_tab.same_batch(ctx, ids, augs)
    data_tab.select_variant(ctx, ids, augs, "none", SimpleNamespace(index=1))
    augmented = [cfg for cfg in seen if cfg.enabled()]  # the originals beside the variants are drawn unaugmented
    assert len(augmented) == 5  # batch and variants, redrawn batch and variants, a chosen sample's variants
    assert all(cfg == preset.only(augs) for cfg in augmented)
    assert all(cfg.enabled() == ("rotate", "scale") for cfg in augmented)
    if not cuda:  # Fast (CPU): its zoom stays gentle; the rotation it leaves off comes on at the default strength
        assert (augmented[0].scale, augmented[0].rotate) == (0.05, 10.0)


@pytest.mark.parametrize("hide", ["none", "box"])
def test_with_every_augmentation_off_the_copies_say_they_are_unchanged(ctx, hide):
    _, ids, compare = data_tab.new_batch(ctx, [], hide)
    (original, first), copies = compare[0], compare[1:]
    assert first == "original" and len(copies) == data_tab.VARIANTS
    assert all(np.array_equal(image, copies[0][0]) for image, _ in copies)  # identical, as the captions must say
    captions = {c for _, c in copies}
    assert len(captions) == 1 and not captions.pop().startswith("augmented")
    if hide == "none":
        assert all(np.array_equal(image, original) for image, _ in copies)
        assert {c for _, c in copies} == {data_tab.UNCHANGED}
    else:  # the lungs are hidden in the copies, not in the original: "same as the original" would be false
        assert all("same as the original" not in c for _, c in copies)


def test_with_an_augmentation_on_the_copies_are_numbered(ctx):
    compare = data_tab.variants(ctx, data_tab.new_batch(ctx, [])[1], ["hflip"])
    assert [c for _, c in compare] == ["original"] + [f"augmented {n + 1}" for n in range(data_tab.VARIANTS)]


def test_an_unknown_augmentation_is_a_sentence_not_a_traceback(ctx):
    _, ids, _ = data_tab.new_batch(ctx, [])
    with pytest.raises(gr.Error, match="unknown augmentation"):
        data_tab.same_batch(ctx, ids, ["blur"])
