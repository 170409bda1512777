import os
import pickle

import pytest
import torch

from cxr.train.checkpoint import list_checkpoints, load_checkpoint, read_checkpoint_file, save_checkpoint
from cxr.train.model import build_model


def _save(path, classes=("covid", "normal", "viral"), **kwargs):
    model, _ = build_model(len(classes), "none")
    return model, save_checkpoint(path, model, classes, 96, {"lr": 1e-3}, {"val_accuracy": 0.5}, step=7, **kwargs)


def test_checkpoint_round_trip_keeps_weights_class_names_and_settings(tmp_path):
    model, path = _save(tmp_path / "a.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.classes == ("covid", "normal", "viral") and ckpt.class_names == ["COVID", "Normal", "Viral Pneumonia"]
    assert ckpt.image_size == 96 and ckpt.config == {"lr": 1e-3} and ckpt.metrics == {"val_accuracy": 0.5}
    assert ckpt.step == 7 and ckpt.created and not ckpt.model.training
    for (k, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_keeps_its_split_by_file_name_and_an_older_file_has_none(tmp_path):
    names = {"val": ["COVID/images/COVID-1.png"], "test": ["Normal/images/Normal-2.png"]}
    path = save_checkpoint(tmp_path / "s.pt", build_model(3, "none")[0], ("covid", "normal", "viral"), 64, {}, {},
                           split=names)
    assert load_checkpoint(path).split == names
    raw = read_checkpoint_file(path)
    del raw["split"]
    torch.save(raw, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").split == {}


def test_checkpoint_keeps_its_calibration_and_an_older_file_has_temperature_one(tmp_path):
    record = {"temperature": 1.7, "ece_before": 0.2, "ece_after": 0.05, "fitted_on": "validation", "images": 90}
    _, path = _save(tmp_path / "c.pt", calibration=record)
    ckpt = load_checkpoint(path)
    assert ckpt.calibration == record and ckpt.temperature == 1.7
    raw = read_checkpoint_file(path)
    del raw["calibration"]
    torch.save(raw, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.calibration == {} and old.temperature == 1.0


def test_checkpoint_describes_itself(tmp_path):
    _, path = _save(tmp_path / "a.pt")
    raw = read_checkpoint_file(path)
    for key in ("state_dict", "classes", "image_size", "normalization", "config", "metrics", "created",
                "torch_version", "torchvision_version", "arch", "split", "calibration"):
        assert key in raw, key
    assert raw["normalization"]["mean"] == [0.485, 0.456, 0.406]


def test_optimizer_state_survives_the_round_trip(tmp_path):
    model, _ = build_model(3, "none")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "a.pt", model, ("a", "b", "c"), 32, {}, {}, optimizer=opt)
    restored = torch.optim.Adam(load_checkpoint(tmp_path / "a.pt").model.parameters(), lr=1e-3)
    restored.load_state_dict(load_checkpoint(tmp_path / "a.pt").optimizer)
    assert restored.state_dict()["state"][0]["step"] == 1


def test_save_leaves_no_temporary_files(tmp_path):
    _save(tmp_path / "a.pt")
    _save(tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_head_that_does_not_fit_the_class_list_is_refused(tmp_path):
    _, path = _save(tmp_path / "a.pt")
    raw = read_checkpoint_file(path)
    raw["classes"] = ["covid", "normal"]
    torch.save(raw, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="does not fit its class list: the head has 3 outputs but 2 classes"):
        load_checkpoint(tmp_path / "b.pt")


@pytest.mark.parametrize("cut", [0.0, 0.5, 0.99])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    _, path = _save(tmp_path / "a.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")


def test_not_a_cxr_checkpoint_is_refused(tmp_path):
    torch.save({"some": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a cxr checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "notes.pt").write_text("a text file with a .pt name")
    with pytest.raises(ValueError, match="notes.pt is not a cxr model: it is not a PyTorch checkpoint file at all"):
        load_checkpoint(tmp_path / "notes.pt")


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious-checkpoint payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _, path = _save(tmp_path / "good.pt")
    raw = read_checkpoint_file(path)
    raw["config"] = _RunsCode(marker)
    torch.save(raw, tmp_path / "evil.pt")
    # the payload really is live: plain pickle would run it
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_RunsCode(tmp_path / "control"), f)
    with open(tmp_path / "plain.pkl", "rb") as f:
        pickle.load(f)
    assert (tmp_path / "control").exists()

    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_list_checkpoints_newest_first(tmp_path):
    _save(tmp_path / "old.pt")
    _save(tmp_path / "new.pt")
    os.utime(tmp_path / "old.pt", (1, 1))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["new.pt", "old.pt"]
    assert list_checkpoints(tmp_path / "none") == []


def test_a_new_save_is_a_new_version_even_with_the_same_time_and_size(tmp_path):
    from cxr.train.checkpoint import checkpoint_version

    _, path = _save(tmp_path / "v.pt")
    first = checkpoint_version(path)
    assert checkpoint_version(path) == first  # reading it changes nothing
    stat = path.stat()
    _save(tmp_path / "v.pt")  # the same weights' size, saved again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even back at the same modification time
    assert checkpoint_version(path) != first


def test_a_checkpoint_saved_before_the_redesign_still_loads_and_classifies(tmp_path, synthetic_root):
    """A file as commit f20085c's save_checkpoint wrote it (the flat layout's last version): the same keys, its
    TrainConfig without the settings added since (auto_size), no run plan. It loads, rebuilds its settings and
    classifies."""
    from dataclasses import asdict

    import torchvision

    from cxr.predict import Classifier
    from cxr.train.config import TrainConfig

    model, _ = build_model(3, "none")
    config = asdict(TrainConfig(image_size=64))
    del config["auto_size"]  # not a setting then
    payload = {
        "format": "cxr-checkpoint", "version": 1, "arch": "resnet18",
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": ["covid", "normal", "viral"], "image_size": 64,
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channels": 3,
                          "source": "grayscale"},
        "config": config, "metrics": {"val_accuracy": 0.5, "test_accuracy": 0.4}, "step": 12, "synthetic": True,
        "split": {"val": ["COVID/images/COVID-1.png"], "test": ["Normal/images/Normal-1.png"]},
        "created": "2026-12-01T10:00:00+0000", "torch_version": str(torch.__version__),
        "torchvision_version": str(torchvision.__version__),
    }
    path = tmp_path / "old.pt"
    torch.save(payload, path)
    ckpt = load_checkpoint(path)
    assert ckpt.classes == ("covid", "normal", "viral") and ckpt.image_size == 64 and ckpt.plan == {}
    assert TrainConfig.from_dict(ckpt.config).auto_size is False
    pred = Classifier(ckpt).predict(synthetic_root / "COVID" / "images" / "COVID-1.png", explain=True)
    assert pred.heatmap.shape == (64, 64) and abs(sum(pred.probabilities.values()) - 1) < 1e-5
