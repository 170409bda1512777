"""The app's handlers called directly, as functions: no server, no browser."""

import threading
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from cxr.events import Done, Evaluated, Started, Step
from demo import classify_tab, data_tab, train_tab
from demo.context import resolve_settings
from demo.job import TrainingJob
from tests import imagefiles


# ---------------------------------------------------------------------------------------------- data tab
def test_split_counts_cover_every_class_and_split(ctx):
    df = data_tab.split_counts(ctx)
    assert set(df["split"]) == {"train", "validation", "test"}
    assert set(df["class"]) == {"COVID", "Normal", "Viral Pneumonia"}
    assert df["images"].sum() == 36
    assert "36 images" in data_tab.summary(ctx) and "synthetic" in data_tab.summary(ctx)


@pytest.mark.parametrize("augs", [[], ["hflip"], ["hflip", "rotate", "scale", "translate", "brightness", "contrast"]])
def test_new_batch_shows_labelled_unnormalised_samples_and_variants(ctx, augs):
    gallery, ids, compare = data_tab.new_batch(ctx, augs)
    assert len(gallery) == len(ids) == 12
    image, caption = gallery[0]
    assert image.dtype == np.uint8 and image.shape == (224, 224, 3)
    assert caption.endswith("(synthetic)")
    assert len(compare) == 1 + data_tab.VARIANTS and compare[0][1].startswith("original")
    original = compare[0][0]
    if not augs:
        assert all(np.array_equal(v, original) for v, _ in compare[1:])
    else:
        assert any(not np.array_equal(v, original) for v, _ in compare[1:])


def test_selecting_a_sample_shows_its_variants(ctx):
    _, ids, _ = data_tab.new_batch(ctx, ["rotate"])
    out = data_tab.select_variant(ctx, ids, ["rotate"], SimpleNamespace(index=3))
    label = ctx.index.classes[ctx.index.labels[ids[3]]]
    assert data_tab._caption(ctx, ids[3]) in out[0][1] and label


# ---------------------------------------------------------------------------------------------- classify
def test_classify_returns_probabilities_overlay_and_state(ctx, synthetic_root):
    image = synthetic_root / "COVID" / "images" / "COVID-1.png"
    probs, shown, caption, state, targets = classify_tab.classify(ctx, str(image), "tiny.pt", "predicted class", 0.5)
    assert set(probs) == {"COVID", "Normal", "Viral Pneumonia"} and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    assert shown.dtype == np.uint8 and shown.shape == (64, 64, 3)
    assert "Grad-CAM for" in caption and "(synthetic model)" in caption
    assert [c if isinstance(c, str) else c[1] for c in targets["choices"]] == ["predicted class", "covid", "normal", "viral"]
    redrawn = classify_tab.reblend(state, 0.0)
    assert np.array_equal(redrawn, np.repeat(np.asarray(state[0])[..., None], 3, axis=2))


def test_classify_explains_the_chosen_class(ctx, synthetic_root):
    image = str(synthetic_root / "Normal" / "images" / "Normal-1.png")
    *_, caption, _, _ = classify_tab.classify(ctx, image, "tiny.pt", "viral", 0.5)
    assert "Viral Pneumonia" in caption


def test_classify_refuses_a_class_the_model_does_not_know(ctx, synthetic_root):
    image = str(synthetic_root / "Normal" / "images" / "Normal-1.png")
    with pytest.raises(gr.Error, match="cannot explain 'lung_opacity'"):
        classify_tab.classify(ctx, image, "tiny.pt", "lung_opacity", 0.5)


@pytest.mark.parametrize("kind", sorted(imagefiles.BROKEN))
def test_classify_turns_bad_files_into_one_sentence(ctx, tmp_path, kind):
    writer, name, words = imagefiles.BROKEN[kind]
    with pytest.raises(gr.Error, match=words) as info:
        classify_tab.classify(ctx, str(writer(tmp_path / name)), "tiny.pt", "predicted class", 0.5)
    assert str(tmp_path) not in str(info.value), "no server paths in messages"


def test_classify_without_file_or_checkpoint_says_what_to_do(ctx, synthetic_root):
    with pytest.raises(gr.Error, match="Drop an X-ray"):
        classify_tab.classify(ctx, None, "tiny.pt", "predicted class", 0.5)
    with pytest.raises(gr.Error, match="Train tab"):
        classify_tab.classify(ctx, str(synthetic_root / "COVID" / "images" / "COVID-1.png"), None, "x", 0.5)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "tiny.pt/../x.pt", "missing.pt", "notes.txt"])
def test_checkpoints_are_chosen_by_name_from_the_folder_only(ctx, synthetic_root, name):
    with pytest.raises(gr.Error):
        classify_tab.classify(ctx, str(synthetic_root / "COVID" / "images" / "COVID-1.png"), name, "x", 0.5)


def test_examples_come_from_the_test_split(ctx):
    ids = classify_tab.example_ids(ctx)
    assert ids and set(ids) <= set(ctx.split.test)
    gallery = classify_tab.example_gallery(ctx)
    assert len(gallery) == len(ids) and gallery[0][0].dtype == np.uint8
    probs, *_ = classify_tab.classify_example(ctx, "tiny.pt", "predicted class", 0.5, SimpleNamespace(index=0))
    assert len(probs) == 3


def test_checkpoint_list_refreshes_only_when_the_folder_changes(ctx, trained_checkpoint):
    names = ctx.checkpoint_names()
    assert classify_tab.refresh_checkpoints(ctx, names, "tiny.pt")[1] == names
    (ctx.settings.checkpoints_dir / "new.pt").write_bytes(trained_checkpoint.read_bytes())
    update, known, hint = classify_tab.refresh_checkpoints(ctx, names, "tiny.pt")
    assert "new.pt" in known and update["value"] == "tiny.pt" and hint["visible"] is False


def test_loaded_models_are_reused(ctx):
    assert ctx.classifier("tiny.pt") is ctx.classifier("tiny.pt")


# ---------------------------------------------------------------------------------------------- train tab
def _fake_fit(n_evals=3, hold: threading.Event | None = None):
    """A stand-in for cxr.train.fit that emits a realistic stream instantly (or waits on `hold`)."""

    def fake(cfg, stop=None):
        yield Started(["covid", "normal", "viral"], {}, {"train": 8, "val": 3, "test": 3}, "kaggle-v4", True, "cpu",
                      "random", 1, n_evals * 2, 0)
        for k in range(1, n_evals + 1):
            if hold is not None:
                hold.wait(10)
            if stop is not None and stop.is_set():
                break
            yield Step(2 * k, 0, n_evals * 2, 1.0 / k, 10.0, 5.0)
            yield Evaluated(2 * k, 0, n_evals * 2, 1.0 / k, 0.5, 1.2 / k, 0.3 * k, 10.0, 5.0, True, "x.pt")
        report = {"classes": ["covid", "normal", "viral"], "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 1, 0]],
                  "per_class": {c: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for c in ("covid", "normal", "viral")},
                  "macro": {"precision": 1.0, "recall": 1.0, "f1": 1.0}, "accuracy": 2 / 3, "count": 3}
        yield Done(2 * k, 1.0, "stopped" if stop is not None and stop.is_set() else "max_steps", 10.0, 0.9, 2 / 3, 0.5,
                   report, "checkpoints/x.pt", "", 1.0, 0.1, 0.1, 0.1, 0.1, 100.0, [])

    return fake


def _settings(preset="fast-cpu"):
    return (preset, 64, 8, 1e-3, 2, 4, 2, 0.95, "none", ["hflip"], "none", 0)


def test_preset_values_fill_every_widget():
    values = train_tab.preset_values("recipe")
    assert values[1:4] == (224, 6, 3e-5) and values[-1] == ["hflip"]


def test_build_config_uses_the_server_dataset_and_checkpoint_folder(ctx):
    cfg = train_tab.build_config(ctx, *_settings())
    assert cfg.data == str(ctx.settings.data_dir) and cfg.out.startswith(str(ctx.settings.checkpoints_dir))
    assert cfg.image_size == 64 and cfg.augment.enabled() == ("hflip",)
    with pytest.raises(ValueError, match="needs a value"):
        train_tab.build_config(ctx, "fast-cpu", None, 8, 1e-3, 2, 4, 2, 0.95, "none", [], "none", 0)


def test_poll_shows_curves_then_results_and_skips_when_nothing_changed(ctx):
    ctx.job = TrainingJob(train=_fake_fit())
    assert "No training yet" in train_tab.poll(ctx, -1)[0]
    train_tab.start_training(ctx, *_settings())
    assert ctx.job.wait(10)
    out = train_tab.poll(ctx, -1)
    status, loss, acc, metrics, cm, start, stop, version = out
    assert "Finished" in status and "test accuracy 66.7%" in status
    assert isinstance(loss, pd.DataFrame) and set(loss["curve"]) == {"training loss", "validation loss"} and len(loss) == 6
    assert set(acc["curve"]) == {"training accuracy", "validation accuracy", "target"}
    assert (acc[acc["curve"] == "target"]["accuracy"] == 0.95).all()
    assert metrics["visible"] and list(metrics["value"]["class"])[-1] == "macro average"
    assert cm["visible"] and start["interactive"] and not stop["interactive"]
    again = train_tab.poll(ctx, version)
    assert again[1] == gr.skip() and again[-1] == version


def test_second_start_while_running_is_refused_and_stop_works(ctx):
    hold = threading.Event()
    ctx.job = TrainingJob(train=_fake_fit(n_evals=5, hold=hold))
    train_tab.start_training(ctx, *_settings())
    with pytest.raises(gr.Error, match="already going"):
        train_tab.start_training(ctx, *_settings())
    assert "Stopping" in train_tab.stop_training(ctx)
    hold.set()
    assert ctx.job.wait(10)
    snap = ctx.job.snapshot()
    assert snap.status == "done" and snap.done["reason"] == "stopped"
    assert train_tab.stop_training(ctx) == "Nothing is training."


def test_failed_run_is_reported_and_the_job_can_start_again(ctx):
    def broken(cfg, stop=None):
        yield Started(["a", "b"], {}, {}, "", True, "cpu", "", 1, 1, 0)
        raise ValueError("class 'viral' has 1 image; at least 3 are needed")

    ctx.job = TrainingJob(train=broken)
    train_tab.start_training(ctx, *_settings())
    ctx.job.wait(10)
    assert "Training failed" in train_tab.poll(ctx, -1)[0] and "at least 3" in train_tab.poll(ctx, -1)[0]
    ctx.job._train = _fake_fit()
    train_tab.start_training(ctx, *_settings())
    assert ctx.job.wait(10) and ctx.job.snapshot().status == "done"


def test_real_training_job_writes_a_checkpoint_classify_can_use(ctx):
    ctx.job = TrainingJob()
    settings = ("fast-cpu", 64, 8, 1e-3, 2, 3, 3, 0.95, "none", ["hflip"], "none", 0)
    train_tab.start_training(ctx, *settings)
    assert ctx.job.wait(120)
    snap = ctx.job.snapshot()
    assert snap.status == "done", snap.error
    name = snap.done["checkpoint"].rsplit("/", 1)[-1]
    assert name in ctx.checkpoint_names()
    image = ctx.index.files[ctx.split.test[0]]
    probs, *_ = classify_tab.classify(ctx, str(image), name, "predicted class", 0.4)
    assert len(probs) == 3


def test_settings_choose_synthetic_data_with_a_banner_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.delenv("CXR_DATA", raising=False)
    monkeypatch.delenv("CXR_DOWNLOAD", raising=False)
    started = time.perf_counter()
    settings = resolve_settings(root=tmp_path)
    assert settings.synthetic and "Synthetic data" in settings.banner and "kaggle.com" in settings.banner
    assert settings.data_dir == tmp_path / "data" / "synthetic" and settings.checkpoints_dir == tmp_path / "checkpoints"
    assert time.perf_counter() - started < 60
    again = resolve_settings(root=tmp_path)  # made once, reused
    assert again.data_dir == settings.data_dir


def test_settings_prefer_the_real_database_folder(tmp_path, monkeypatch, synthetic_root):
    monkeypatch.delenv("CXR_DATA", raising=False)
    real = tmp_path / "data" / "COVID-19_Radiography_Dataset"
    real.mkdir(parents=True)
    assert resolve_settings(root=tmp_path).data_dir == real and not resolve_settings(root=tmp_path).banner
    monkeypatch.setenv("CXR_DATA", str(synthetic_root))
    assert resolve_settings(root=tmp_path).data_dir == synthetic_root


def test_download_offline_falls_back_to_synthetic_and_says_why(tmp_path, monkeypatch):
    import cxr.download

    monkeypatch.delenv("CXR_DATA", raising=False)
    monkeypatch.setattr(cxr.download, "network_available", lambda *a, **k: False)
    settings = resolve_settings(download=True, root=tmp_path)
    assert settings.synthetic and "download of the real database failed" in settings.banner
