import warnings

import pytest
import torch
import torchvision

import cxr.train.model
from cxr.train.model import (
    IMAGENET_FILE,
    WeightsUnavailable,
    build_model,
    count_parameters,
    freeze_layers,
    imagenet_cache_path,
    load_imagenet_state_dict,
    set_train_mode,
)


def _fake_imagenet_file() -> dict:
    """Write a ResNet18 state dict where torch.hub keeps ImageNet weights (TORCH_HOME is a temp dir in tests)."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(cxr.train.model.torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_head_is_replaced_for_the_class_count(num_classes):
    model, source = build_model(num_classes, "none")
    assert model.fc.out_features == num_classes and model.fc.in_features == 512
    assert "random" in source
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, num_classes)


def test_imagenet_weights_come_from_the_torch_hub_cache(no_download, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert str(imagenet_cache_path()).startswith(str(tmp_path)) and imagenet_cache_path().name == IMAGENET_FILE
    state = _fake_imagenet_file()
    model, source = build_model(3, "imagenet")
    assert "ImageNet" in source
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_missing_imagenet_weights_offline_name_the_file_and_folder(no_download, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable) as info:
        build_model(3, "imagenet")
    message = str(info.value)
    assert IMAGENET_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert not imagenet_cache_path().exists(), "no partial file is left behind"
    with pytest.raises(WeightsUnavailable, match="not in the cache"):
        load_imagenet_state_dict(download=False)


def test_auto_falls_back_to_random_with_a_warning(no_download, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, source = build_model(3, "auto")
    assert "random" in source and "Accuracy will be much lower" in source
    assert any(IMAGENET_FILE in str(w.message) for w in caught)
    _fake_imagenet_file()
    assert "ImageNet" in build_model(3, "auto")[1]


def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(5)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "w.pth")
    model, source = build_model(3, str(tmp_path / "w.pth"))
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"]) and "w.pth" in source


def test_weights_file_that_is_not_resnet18_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="not a ResNet18"):
        build_model(3, str(tmp_path / "w.pth"))
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(ValueError, match="not a readable weights file"):
        build_model(3, str(tmp_path / "junk.pth"))
    with pytest.raises(ValueError, match="'foo': no such file; use auto, imagenet, none or the path"):
        build_model(3, "foo")  # a mistyped choice reads as one, not as a file that failed to load


@pytest.mark.parametrize("level, frozen_names", [("stem", ["conv1"]), ("layer2", ["conv1", "layer1", "layer2"])])
def test_freezing_stops_gradients_and_keeps_batch_norm_statistics(level, frozen_names):
    model, _ = build_model(3, "none")
    trainable_before, total = count_parameters(model)
    freeze_layers(model, level)
    for name in frozen_names:
        assert not any(p.requires_grad for p in getattr(model, name).parameters())
    assert all(p.requires_grad for p in model.layer4.parameters())
    assert count_parameters(model)[0] < trainable_before and count_parameters(model)[1] == total
    set_train_mode(model)
    assert not model.bn1.training and model.layer4.training
    running = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.bn1.running_mean, running)


def test_unknown_freeze_level_is_refused():
    with pytest.raises(ValueError, match="freeze must be one of"):
        freeze_layers(build_model(3, "none")[0], "layer9")
