"""The app's handlers called directly, as functions: no server, no browser."""

import random
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from cxr.train.events import Attention, Done, Evaluated, Started, Step
from cxr.data.index import display_name
from cxr.train.presets import apply_preset
from cxr.data.transforms import AugmentConfig
from demo import classify_image, classify_tab, data_tab, model_files, teacher, train_tab
from demo.settings import resolve_settings
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
    # Seeded: with the mirror alone, all five variants come out unmirrored in one draw of 32.
    random.seed(7)
    gallery, ids, compare = data_tab.new_batch(ctx, augs)
    assert len(gallery) == len(ids) == 12
    image, caption = gallery[0]
    assert image.dtype == np.uint8 and image.shape == (224, 224, 3)
    assert caption == display_name(ctx.index.classes[ctx.index.labels[ids[0]]])  # short: it must fit a thumbnail
    assert len(compare) == 1 + data_tab.VARIANTS and compare[0][1].startswith("original")
    original = compare[0][0]
    if not augs:
        assert all(np.array_equal(v, original) for v, _ in compare[1:])
    else:
        assert any(not np.array_equal(v, original) for v, _ in compare[1:])


def test_switching_an_augmentation_redraws_the_batch_and_its_variants(ctx):
    gallery, ids, _ = data_tab.new_batch(ctx, [])
    redrawn, compare = data_tab.same_batch(ctx, ids, ["rotate", "brightness"])
    assert [c for _, c in redrawn] == [c for _, c in gallery]  # the same images...
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(gallery, redrawn))  # ...now augmented
    assert compare[0][1].startswith("original") and len(compare) == 1 + data_tab.VARIANTS


@pytest.mark.parametrize("hide", ["box", "mask"])
def test_the_preview_shows_the_lungs_hidden_as_the_model_gets_them(ctx, hide):
    gallery, ids, compare = data_tab.new_batch(ctx, [], hide)
    shown = [np.asarray(p) for p, _ in gallery]
    assert all((p == 0).mean() > 0.1 for p in shown)  # a large black region in every sample
    assert (np.asarray(compare[0][0]) == 0).mean() < 0.1  # the original beside them is whole
    if hide == "box":
        assert all((p[40:180, 50:170] == 0).all() for p in shown)  # inside x 15-85 %, y 10-90 % of 224 px


def test_the_augmentation_labels_come_from_the_config():
    from dataclasses import replace

    from cxr.data.transforms import AugmentConfig
    from demo.labels import augmentation_labels

    assert augmentation_labels()["rotate"] == "rotate ±10°"
    assert augmentation_labels(replace(AugmentConfig(), rotate=15.0, scale=0.2))["rotate"] == "rotate ±15°"
    assert augmentation_labels(replace(AugmentConfig(), scale=0.2))["scale"] == "zoom ±20%"


def test_selecting_a_sample_shows_its_variants(ctx):
    _, ids, _ = data_tab.new_batch(ctx, ["rotate"])
    out = data_tab.select_variant(ctx, ids, ["rotate"], "none", SimpleNamespace(index=3))
    assert out[0][1] == "original" and len(out) == 1 + data_tab.VARIANTS


# ---------------------------------------------------------------------------------------------- classify
@pytest.fixture
def tab(ctx):
    """The Classify tab's components, for the handlers that return a dict keyed by them."""
    with gr.Blocks():
        return classify_tab.build(ctx)


def test_classify_returns_probabilities_overlay_and_state(ctx, tab, synthetic_root):
    image = synthetic_root / "COVID" / "images" / "COVID-1.png"
    out = classify_tab.classify_upload(ctx, tab, str(image), "tiny.pt", "predicted class", 0.5)
    probs, shown, caption, session = out[tab.probs], out[tab.overlay], out[tab.caption], out[tab.session]
    assert set(probs) == {"COVID", "Normal", "Viral Pneumonia"} and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    assert shown.dtype == np.uint8 and shown.shape == (64, 64, 3) and out[tab.original].shape == (64, 64)
    assert "Grad-CAM for" in caption and "(synthetic model)" in caption and "8 x 8 cells" in caption
    targets = out[tab.target]["choices"]
    assert [c if isinstance(c, str) else c[1] for c in targets] == ["predicted class", "covid", "normal", "viral"]
    redrawn = classify_tab.reblend(session, 0.0)
    assert np.array_equal(redrawn, np.repeat(session.image[..., None], 3, axis=2))


def test_an_image_unlike_the_training_xrays_is_marked_as_no_answer(ctx, tab, synthetic_root, tmp_path):
    xray = synthetic_root / "COVID" / "images" / "COVID-1.png"
    from PIL import Image

    noise = tmp_path / "noise.png"  # (a flat image is refused before the model sees it: "an X-ray shows shades")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise)
    out = classify_tab.classify_upload(ctx, tab, str(noise), "tiny.pt", "predicted class", 0.5)
    assert out[tab.ood_note]["visible"] is True and classify_image.UNLIKE_TRAINING in out[tab.ood_note]["value"]
    assert classify_image.UNLIKE_TRAINING in out[tab.caption] and len(out[tab.probs]) == 3  # in view, marked
    passed = classify_image.classify(ctx, str(xray), "tiny.pt", "predicted class", 0.5)
    assert passed.ood_score is not None and classify_image.NO_CHECK not in passed.caption
    out = classify_tab.cleared(tab)  # a refused upload takes the note away with the rest
    assert out[tab.ood_note]["visible"] is False


def test_classify_explains_the_chosen_class(ctx, synthetic_root):
    image = str(synthetic_root / "Normal" / "images" / "Normal-1.png")
    assert "Viral Pneumonia" in classify_tab.classify(ctx, image, "tiny.pt", "viral", 0.5).caption


def test_classify_says_how_often_a_model_still_training_has_been_right_so_far(ctx, synthetic_root, monkeypatch):
    image = str(synthetic_root / "Normal" / "images" / "Normal-1.png")
    assert "Still training" not in classify_tab.classify(ctx, image, "tiny.pt", "predicted class", 0.5).caption
    monkeypatch.setattr(ctx, "running_checkpoint", lambda: "tiny.pt")
    accuracy = ctx.classifier("tiny.pt").checkpoint.metrics["val_accuracy"]
    caption = classify_tab.classify(ctx, image, "tiny.pt", "predicted class", 0.5).caption
    assert caption.startswith(f"**Still training:** these weights were right on {100 * accuracy:.0f} % of the "
                              "validation X-rays so far")
    assert classify_image.training_words({}).startswith("**Still training:** these weights have not been validated")


def test_classify_refuses_a_class_the_model_does_not_know(ctx, synthetic_root):
    image = str(synthetic_root / "Normal" / "images" / "Normal-1.png")
    with pytest.raises(gr.Error, match="cannot explain that class"):
        classify_tab.classify(ctx, image, "tiny.pt", "lung_opacity", 0.5)


@pytest.mark.slow
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


def test_an_upload_is_deleted_once_classified_and_a_dataset_image_never_is(ctx, synthetic_root, tmp_path, monkeypatch):
    import shutil

    upload, cached = tmp_path / "abc123" / "xray.png", tmp_path / "def456" / "gallery.png"
    for path in (upload, cached):
        path.parent.mkdir()
        shutil.copy(synthetic_root / "COVID" / "images" / "COVID-1.png", path)
    monkeypatch.setattr(ctx, "uploads", {str(upload)})  # what Gradio recorded as sent by a visitor
    classify_tab.classify(ctx, str(upload), "tiny.pt", "predicted class", 0.5)
    assert not upload.exists()  # no janitor here (a script, a test): deleted at once
    classify_tab.classify(ctx, str(cached), "tiny.pt", "predicted class", 0.5)  # a server file a request named
    assert cached.exists()
    dataset_image = synthetic_root / "COVID" / "images" / "COVID-2.png"
    classify_tab.classify(ctx, str(dataset_image), "tiny.pt", "predicted class", 0.5)
    assert dataset_image.exists()


def test_an_xray_over_20_mb_is_refused_before_decoding(ctx, tmp_path):
    big = tmp_path / "huge-scan.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (21 * 2**20))
    with pytest.raises(gr.Error, match="huge-scan.png is 21 MB; X-rays of at most 20 MB are accepted"):
        classify_tab.classify(ctx, str(big), "tiny.pt", "predicted class", 0.5)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "tiny.pt/../x.pt", "missing.pt", "notes.txt"])
def test_checkpoints_are_chosen_by_name_from_the_folder_only(ctx, synthetic_root, name):
    with pytest.raises(gr.Error):
        classify_tab.classify(ctx, str(synthetic_root / "COVID" / "images" / "COVID-1.png"), name, "x", 0.5)


def test_examples_come_from_the_models_own_test_split(ctx, tab, trained_checkpoint):
    ids = classify_tab.example_ids(ctx, "tiny.pt")
    assert ids and set(ids) <= set(ctx.split_for("tiny.pt").test)  # tiny.pt's split (3 per class), not the default
    assert set(ids) != set(classify_tab.example_ids(ctx))
    other = _copy_model(trained_checkpoint, ctx.settings.checkpoints_dir / "seed5.pt", test_accuracy=0.5)
    from cxr.train.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(other)
    save_checkpoint(other, ck.model, ck.classes, ck.image_size, {**ck.config, "seed": 5}, ck.metrics)
    seed5 = classify_tab.example_ids(ctx, "seed5.pt")
    assert set(seed5) <= set(ctx.split_for("seed5.pt").test) and set(seed5) != set(ids)
    gallery = classify_tab.example_gallery(ctx, "tiny.pt")
    assert len(gallery) == len(ids) and gallery[0][0].dtype == np.uint8
    out = classify_tab.classify_example(ctx, tab, "tiny.pt", "predicted class", 0.5, SimpleNamespace(index=0))
    assert len(out[tab.probs]) == 3


def test_loaded_models_are_reused(ctx):
    assert ctx.classifier("tiny.pt") is ctx.classifier("tiny.pt")


# ---------------------------------------------------------------------------------------------- train tab
REPORT = {"classes": ["covid", "normal", "viral"], "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 1, 0]],
          "per_class": {c: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for c in ("covid", "normal", "viral")},
          "macro": {"precision": 1.0, "recall": 1.0, "f1": 1.0}, "accuracy": 2 / 3, "count": 3}


def _fake_fit(n_evals=3, hold: threading.Event | None = None, pretrained=False):
    """A stand-in for cxr.train.loop.fit that emits a realistic stream instantly (or waits on `hold`)."""

    def fake(cfg, stop=None):
        total = n_evals * 2
        yield Started(classes=["covid", "normal", "viral"], counts={}, split={"train": 8, "val": 3, "test": 3},
                      layout="kaggle-v4", synthetic=True, device="cpu", pretrained=pretrained, trainable_params=1,
                      weights="ImageNet" if pretrained else "random initialisation: no file there. Accuracy will be much lower",
                      total_steps=total, start_step=0, checkpoint="x.pt")
        k = 0
        for k in range(1, n_evals + 1):
            if hold is not None:
                hold.wait(10)
            if stop is not None and stop.is_set():
                break
            yield Step(step=2 * k, epoch=0, total_steps=total, train_loss=1.0 / k, train_images_per_sec=10.0, eta_s=5.0)
            yield Evaluated(step=2 * k, epoch=0, total_steps=total, train_loss=1.0 / k, train_accuracy=0.5,
                            val_loss=1.2 / k, val_accuracy=0.3 * k, train_images_per_sec=10.0, eta_s=5.0, is_best=True,
                            checkpoint="x.pt")
            yield Attention(step=2 * k, files=["COVID/images/COVID-1.png"] * 3, classes=["covid", "normal", "viral"],
                            predicted=["covid", "covid", "viral"], maps=[[[k / n_evals] * 16] * 16] * 3)
        yield Done(steps=2 * k, epochs=1.0, reason="stopped" if stop is not None and stop.is_set() else "max_steps",
                   train_images_per_sec=10.0, best_val_accuracy=0.9, best_step=2 * k, test_accuracy=2 / 3, test_loss=0.5,
                   test_report=REPORT, checkpoint="checkpoints/x.pt", last_checkpoint="", seconds=1.0, seconds_data=0.1,
                   seconds_eval=0.1, seconds_attention=0.01, seconds_checkpoint=0.1, seconds_test=0.1,
                   peak_memory_mb=100.0, skipped_files=[])

    return fake


def _settings(**changes):
    values = {"image_size": 64, "batch_size": 8, "lr": 1e-3, "epochs": 2, "max_steps": 4, "eval_every": 2,
              "target_accuracy": 0.95, "augment": ["hflip"], "weights": "none", "seed": 0}
    return {**values, **changes}


@pytest.fixture
def view(ctx):
    with gr.Blocks():
        return train_tab.build(ctx)


def test_preset_values_fill_every_widget_by_name():
    values = train_tab.preset_values("recipe")
    assert set(values) == {"description", *train_tab.SETTING_NAMES}
    assert (values["image_size"], values["batch_size"], values["lr"], values["augment"]) == (224, 6, 3e-5, ["hflip"])


def test_build_config_reads_settings_by_name_for_the_server_dataset_and_folder(ctx):
    cfg = train_tab.build_config(ctx, "fast-cpu", _settings())
    assert cfg.data == str(ctx.settings.data_dir) and cfg.out.startswith(str(ctx.settings.checkpoints_dir))
    assert (cfg.image_size, cfg.batch_size, cfg.max_steps) == (64, 8, 4) and cfg.augment.enabled() == ("hflip",)
    assert cfg.preset == "fast-cpu" and cfg.optimizer == train_tab.preset_values("fast-cpu")["optimizer"]


def test_the_augmentation_boxes_name_the_presets_strengths():
    from demo.labels import augmentation_choices

    fast = dict((name, label) for label, name in augmentation_choices(apply_preset("fast-cpu").augment))
    assert (fast["scale"], fast["translate"], fast["rotate"]) == ("zoom ±5%", "shift ±3%", "rotate ±10°")
    recipe = dict((name, label) for label, name in augmentation_choices(apply_preset("recipe").augment))
    assert (recipe["scale"], recipe["translate"]) == ("zoom ±10%", "shift ±5%")


def test_checked_augmentations_keep_the_presets_strengths(ctx):
    preset = train_tab.preset_values("fast-cpu")["augment"]
    cfg = train_tab.build_config(ctx, "fast-cpu", _settings(augment=[*preset, "rotate"]))
    fast = apply_preset("fast-cpu").augment
    assert (cfg.augment.scale, cfg.augment.translate) == (fast.scale, fast.translate) != (0.0, 0.0)
    assert cfg.augment.rotate == AugmentConfig().rotate  # off in the preset: on at the default strength


@pytest.mark.parametrize("changes, words", [
    ({"lr": 1e30}, "learning rate must be between"),
    ({"seed": 2**70}, "seed must be between"), ({"seed": 1.5}, "seed must be a number"),
    ({"weights": "/etc/passwd"}, "auto, imagenet or none"), ({"batch_size": "many"}, "batch size must be a number"),
])
def test_bad_settings_get_one_sentence_before_any_training(ctx, changes, words):
    with pytest.raises(ValueError, match=words):
        train_tab.build_config(ctx, "fast-cpu", _settings(**changes))


def test_the_start_api_takes_settings_by_keyword_and_a_left_out_one_keeps_the_presets_value(ctx):
    import inspect

    fn = train_tab.start_handler(ctx)
    assert list(inspect.signature(fn).parameters) == ["teacher_key", "preset", *train_tab.SETTING_NAMES]
    cfg = train_tab.build_config(ctx, "recipe", {"lr": 1e-4, "image_size": None})
    assert cfg.lr == 1e-4 and cfg.image_size == 224 and cfg.batch_size == 6


def test_a_start_by_keyword_keeps_the_presets_values_and_the_machines_preset(ctx):
    import torch

    from cxr.train.presets import default_preset

    ctx.job = TrainingJob(train=_fake_fit())
    start = train_tab.start_handler(ctx)
    start(preset="recipe")  # every setting left out, as an API caller may
    assert ctx.job.wait(10)
    cfg, recipe = ctx.job.snapshot().config, apply_preset("recipe")
    assert cfg["preset"] == "recipe"
    assert all(cfg[name] == getattr(recipe, name) for name in train_tab.SETTING_NAMES if name != "augment")
    start()  # no preset either: the one this machine starts with
    assert ctx.job.wait(10) and ctx.job.snapshot().config["preset"] == default_preset(torch.cuda.is_available())


def test_poll_shows_curves_attention_then_results_and_skips_when_nothing_changed(ctx, view):
    ctx.job = TrainingJob(train=_fake_fit())
    assert "No training yet" in train_tab.poll(ctx, view, -1, True)[view.status]
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    assert ctx.job.wait(10)
    out = train_tab.poll(ctx, view, -1, True)
    assert "Finished" in out[view.status] and "test accuracy 66.7 %" in out[view.status]
    curves = out[view.curves]
    assert curves.type == "matplotlib" and curves.plot.startswith("data:image/png;base64,")
    # Another page (a student opening the link) gets the same picture, not a second rendering of it.
    assert train_tab.poll(ctx, view, -1, False)[view.curves] is curves
    assert train_tab.poll(ctx, view, -1, False, compare="no such model")[view.curves] is curves
    strip = out[view.attention]  # the step in the strip's label; short captions that fit a third of 1024 px
    assert strip["label"] == "Where the model looks at step 6" and len(strip["value"]) == 3
    assert strip["value"][0][1] == "COVID: right"
    assert train_tab.attention_caption("viral", "normal") == "Viral Pneumonia, called Normal"
    assert out[view.attention_step]["visible"] and out[view.attention_step]["maximum"] == 2
    assert out[view.metrics]["visible"] and list(out[view.metrics]["value"]["class"])[-1] == "macro average"
    assert out[view.start_btn]["interactive"] and not out[view.stop_btn]["interactive"]
    again = train_tab.poll(ctx, view, out[view.seen], True)
    assert view.curves not in again and view.status in again  # only the progress line when nothing changed
    first = train_tab.scrub_attention(ctx, 0)
    assert first["label"].endswith("step 2") and not np.array_equal(first["value"][0][0], strip["value"][0][0])
    # The finished model is named as the model lists name it, so the teacher can find it in Classify.
    snap = ctx.job.snapshot()
    assert "pick *Fast (CPU) · 09:00 · test 66.7 %* in **Classify**" in train_tab.status_text(
        snap, "Fast (CPU) · 09:00 · test 66.7 %")
    assert f"pick `{Path(snap.done['checkpoint']).name}` in **Classify**" in train_tab.status_text(snap)


def test_a_page_built_before_the_starter_run_does_not_say_no_training_while_it_trains(ctx):
    hold = threading.Event()
    ctx.job = TrainingJob(train=_fake_fit(hold=hold))
    with gr.Blocks():
        built = train_tab.build(ctx)  # as app.py does: the page first, then the starter run
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    try:
        assert "No training yet" not in built.status.value  # what every page shows until the timer's first tick
        assert "No training yet" not in train_tab.poll(ctx, built, -1, False)[built.status]
    finally:
        ctx.job.stop()
        hold.set()
        ctx.job.wait(10)


def test_random_weights_are_announced_in_a_visible_warning(ctx, view):
    ctx.job = TrainingJob(train=_fake_fit(pretrained=False))
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    assert ctx.job.wait(10)
    out = train_tab.poll(ctx, view, -1, True)
    assert out[view.warning]["visible"] and "Training from random weights" in out[view.warning]["value"]
    assert "random weights" in out[view.status] and "cpu" in out[view.status]
    ctx.job = TrainingJob(train=_fake_fit(pretrained=True))
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    assert ctx.job.wait(10)
    assert not train_tab.poll(ctx, view, -1, True)[view.warning]["visible"]


def test_second_start_while_running_is_refused_and_stop_works(ctx):
    hold = threading.Event()
    ctx.job = TrainingJob(train=_fake_fit(n_evals=5, hold=hold))
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    with pytest.raises(gr.Error, match="already going"):
        train_tab.start_run(ctx, None, "fast-cpu", _settings())
    assert "Stopping" in train_tab.stop_training(ctx)
    hold.set()
    assert ctx.job.wait(10)
    snap = ctx.job.snapshot()
    assert snap.status == "done" and snap.done["reason"] == "stopped"
    assert train_tab.stop_training(ctx) == "Nothing is training."


def test_with_a_teacher_key_only_the_teacher_may_start_stop_and_add_models(ctx, view, trained_checkpoint, tmp_path):
    from dataclasses import replace

    from demo.auth import digest_key

    ctx.settings = replace(ctx.settings, teacher_key_digest=digest_key("s3cret-key"))
    hold = threading.Event()
    ctx.job = TrainingJob(train=_fake_fit(n_evals=5, hold=hold))
    for key in (None, "", "wrong", 12):
        with pytest.raises(gr.Error, match="Only the teacher") as info:
            train_tab.start_run(ctx, key, "fast-cpu", _settings())
        assert "s3cret" not in str(info.value)
    assert not ctx.job.snapshot().active
    train_tab.start_run(ctx, "s3cret-key", "fast-cpu", _settings())
    with pytest.raises(gr.Error, match="Only the teacher"):
        train_tab.stop_training(ctx, "wrong")
    assert "Stopping" in train_tab.stop_training(ctx, "s3cret-key")
    hold.set()
    assert ctx.job.wait(10)
    box = view.keys
    refused = teacher.check_key(ctx, box, "wrong")
    assert refused[box.teacher] is False and box.key_box not in refused  # the box keeps what was typed
    # The page swaps the accepted key for a token; a reloaded page with the token its tab kept is the teacher's again.
    accepted = teacher.check_key(ctx, box, "s3cret-key")
    token = accepted[box.key_box]
    assert accepted[box.teacher] is True and "s3cret" not in token and ctx.is_teacher(token)
    recalled = teacher.recall_key(ctx, box, token)
    assert (recalled[box.teacher], recalled[box.who]) == (True, teacher.TEACHER_MODE)
    train_tab.start_run(ctx, token, "fast-cpu", _settings())  # Start accepts it, as the page sends it
    hold.set()
    assert ctx.job.wait(10)
    # ...until it expires, or if it was forged or made for another key.
    expiry, mac = token.split(".")[1:]
    assert not ctx.is_teacher(f"teacher.{int(expiry) + 3600}.{mac}")
    assert not ctx.is_teacher(teacher.make_token(digest_key("another-key")))
    assert not ctx.is_teacher(teacher.make_token(digest_key("s3cret-key"), now=time.time() - 4 * 3600))
    assert teacher.recall_key(ctx, box, "old-key") == {box.teacher: False, box.who: teacher.ONLY_TEACHER, box.key_box: ""}
    assert teacher.recall_key(ctx, box, "") == {c: gr.skip() for c in box.outputs}
    upload = tmp_path / "model.pt"
    upload.write_bytes(trained_checkpoint.read_bytes())
    with pytest.raises(gr.Error, match="Only the teacher"):
        model_files.add_model(ctx, str(upload), "wrong")


def test_failed_run_is_reported_in_a_sentence_and_the_job_can_start_again(ctx, view):
    def broken(cfg, stop=None):
        raise ValueError("class 'viral' has 1 image; at least 3 are needed")
        yield  # a generator, like fit

    def buggy(cfg, stop=None):
        raise OverflowError("Overflow when unpacking long long")
        yield

    ctx.job = TrainingJob(train=broken)
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    ctx.job.wait(10)
    status = train_tab.poll(ctx, view, -1, True)[view.status]
    assert "Training failed" in status and "at least 3" in status
    ctx.job._train = buggy
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    ctx.job.wait(10)
    status = train_tab.poll(ctx, view, -1, True)[view.status]
    assert "stopped unexpectedly" in status and "Overflow" not in status  # details go to the log, not to visitors
    ctx.job._train = _fake_fit()
    train_tab.start_run(ctx, None, "fast-cpu", _settings())
    assert ctx.job.wait(10) and ctx.job.snapshot().status == "done"


@pytest.mark.slow
def test_real_training_job_writes_a_checkpoint_classify_can_use(ctx):
    ctx.job = TrainingJob()
    train_tab.start_run(ctx, None, "fast-cpu", _settings(max_steps=3, eval_every=3))
    assert ctx.job.wait(120)
    snap = ctx.job.snapshot()
    assert snap.status == "done", snap.error
    name = snap.done["checkpoint"].rsplit("/", 1)[-1]
    assert name in ctx.checkpoint_names()
    image = ctx.index.files[ctx.split.test[0]]
    assert len(classify_tab.classify(ctx, str(image), name, "predicted class", 0.4).probs) == 3


# ---------------------------------------------------------------------------------------------- models
def _copy_model(src, dst, **metrics):
    from cxr.train.checkpoint import save_checkpoint, load_checkpoint

    ck = load_checkpoint(src)
    save_checkpoint(dst, ck.model, ck.classes, ck.image_size, {**ck.config, "preset": "fast-cpu"},
                    {**ck.metrics, **metrics}, synthetic=False)
    return dst


def test_models_are_labelled_once_and_the_default_is_the_best_finished_one(ctx, trained_checkpoint):
    folder = ctx.settings.checkpoints_dir
    _copy_model(trained_checkpoint, folder / "resnet18-a.pt", test_accuracy=0.9)
    _copy_model(trained_checkpoint, folder / "resnet18-b.pt", test_accuracy=0.5)
    _copy_model(trained_checkpoint, folder / "resnet18-c.pt", test_accuracy=None, val_accuracy=0.78)  # newest, aborted
    (folder / "resnet18-a-last.pt").write_bytes((folder / "resnet18-a.pt").read_bytes())
    models = ctx.models()
    names = [m.name for m in models]
    assert "resnet18-a-last.pt" not in names and len(names) == len(set(names)) == 4
    labels = {m.name: m.label for m in models}
    assert labels["resnet18-a.pt"].startswith("Fast (CPU) · ") and labels["resnet18-a.pt"].endswith("test 90.0 %")
    assert labels["resnet18-c.pt"].endswith("val 78.0 % (unfinished)")
    assert ctx.default_model() == "resnet18-a.pt"


@pytest.fixture
def lists(tab):
    with gr.Blocks():
        return classify_tab.ModelLists(tab.checkpoint, tab.known, tab.hint, compare=gr.Dropdown(), evaluate=gr.Dropdown())


def test_the_model_list_keeps_a_visitors_choice_and_gives_new_pages_the_default(ctx, lists, trained_checkpoint):
    out = classify_tab.model_list(ctx, lists, [], None)
    assert out[lists.checkpoint]["value"] == out[lists.evaluate]["value"] == "tiny.pt"
    assert not out[lists.hint]["visible"]
    _copy_model(trained_checkpoint, ctx.settings.checkpoints_dir / "resnet18-best.pt", test_accuracy=0.99)
    out = classify_tab.model_list(ctx, lists, out[lists.known], "tiny.pt")
    update, known = out[lists.checkpoint], out[lists.known]
    assert update["value"] == "tiny.pt" and "resnet18-best.pt" in [c[1] for c in update["choices"]]
    assert "value" not in out[lists.evaluate]  # the other lists get the new choices and keep their own choice
    assert classify_tab.model_list(ctx, lists, known, "tiny.pt")[lists.checkpoint] == gr.skip()  # nothing changed
    assert classify_tab.model_list(ctx, lists, known, None)[lists.checkpoint]["value"] == "resnet18-best.pt"  # new page


def test_a_server_with_no_model_says_the_starter_is_training(ctx, lists):
    for p in ctx.settings.checkpoints_dir.iterdir():
        p.unlink()
    hold = threading.Event()
    ctx.job = TrainingJob(train=_fake_fit(n_evals=5, hold=hold))
    assert "No trained model yet" in ctx.no_model_yet()
    ctx.job.start(train_tab.build_config(ctx, "fast-cpu", _settings()))
    hint = classify_tab.model_list(ctx, lists, [], None)[lists.hint]
    assert hint["visible"] and "starter model is training" in hint["value"]
    hold.set()
    ctx.job.wait(10)


def test_an_xray_dropped_before_the_first_model_waits_and_is_classified_when_it_lands(ctx, tab, trained_checkpoint):
    import shutil

    for p in ctx.settings.checkpoints_dir.iterdir():
        p.unlink()
    xray = str(ctx.index.files[0])
    with pytest.raises(gr.Error) as info:
        classify_tab.classify(ctx, xray, None, classify_tab.PREDICTED, 0.5)
    assert not info.value.visible and "about" not in str(info.value)  # a short notice: the tab itself counts down
    refused = classify_tab.refused_upload(tab, None)  # the page had no model to choose
    assert refused[tab.waiting] is True and refused[tab.caption] == classify_tab.WAITING
    assert refused[tab.upload] == gr.skip()  # the X-ray stays in the box, to be classified when the model lands
    assert classify_tab.examples_for(ctx, None)["visible"] is False
    untouched = [*tab.panels, tab.waiting, tab.upload]
    nothing = classify_tab.classify_waiting(ctx, tab, True, xray, None, classify_tab.PREDICTED, 0.5)
    assert nothing == {c: gr.skip() for c in untouched}
    shutil.copyfile(trained_checkpoint, ctx.settings.checkpoints_dir / "first.pt")  # the first model lands
    out = classify_tab.classify_waiting(ctx, tab, True, xray, "first.pt", classify_tab.PREDICTED, 0.5)
    assert set(out[tab.probs]) == {display_name(c) for c in ctx.index.classes}
    assert out[tab.waiting] is False and out[tab.upload] is None
    # Nothing waiting (a visitor who only changed the model): nothing classified on its behalf.
    nothing = classify_tab.classify_waiting(ctx, tab, False, xray, "first.pt", classify_tab.PREDICTED, 0.5)
    assert nothing == {c: gr.skip() for c in untouched}
    refused = classify_tab.refused_upload(tab, "first.pt")  # truly refused
    assert refused[tab.caption] == classify_tab.NOTHING_CLASSIFIED and refused[tab.waiting] is False
    assert refused[tab.upload] is None  # the refused file leaves the box with the refusal: no clearing by hand
    assert classify_tab.examples_for(ctx, "first.pt")["visible"] is True


def test_a_model_file_can_be_downloaded_and_added_back(ctx, trained_checkpoint, tmp_path):
    assert model_files.download_model(ctx, "tiny.pt") == str(ctx.settings.checkpoints_dir / "tiny.pt")
    upload = tmp_path / "from-home.pt"
    upload.write_bytes(trained_checkpoint.read_bytes())
    message = model_files.add_model(ctx, str(upload))
    assert message.startswith("Added the model as `resnet18-") and len(ctx.models()) == 2


@pytest.mark.parametrize("kind", ["text", "other_classes", "code"])
def test_a_bad_model_file_is_refused_in_one_sentence(ctx, tmp_path, kind):
    import torch

    from cxr.train.checkpoint import save_checkpoint
    from cxr.train.model import build_model

    path = tmp_path / "bad.pt"
    if kind == "text":
        path.write_text("not a model")
    elif kind == "other_classes":
        save_checkpoint(path, build_model(2)[0], ("covid", "normal"), 64, {}, {})
    else:
        torch.save({"format": "cxr-checkpoint", "x": SimpleNamespace(a=1)}, path)
    with pytest.raises(gr.Error) as info:
        model_files.add_model(ctx, str(path))
    assert "\n" not in str(info.value) and len(ctx.models()) == 1
    words = {"text": "That file is not a cxr model", "other_classes": "that model is for the classes COVID, Normal",
             "code": "contains objects other than plain data"}[kind]
    assert words.lower() in str(info.value).lower()


def test_opening_the_dropdowns_before_an_image_does_nothing(ctx, tab):
    out = classify_tab.reexplain(ctx, tab, None, "tiny.pt", "covid", 0.5)
    assert set(out) == set(tab.panels) and all(v == gr.skip() for v in out.values())


def test_re_explaining_uses_the_image_kept_in_the_session(ctx, tab, synthetic_root):
    image = str(synthetic_root / "COVID" / "images" / "COVID-1.png")
    session = classify_tab.classify(ctx, image, "tiny.pt", "predicted class", 0.5).session
    out = classify_tab.reexplain(ctx, tab, session, "tiny.pt", "viral", 0.5)
    assert "Viral Pneumonia" in out[tab.caption] and out[tab.original].shape == session.image.shape


def test_dataset_images_get_their_lung_focus_and_outline_and_uploads_say_why_not(ctx, tab, synthetic_root):
    from cxr.data.lungs import mask_path

    i = ctx.split_for("tiny.pt").test[0]
    assert mask_path(ctx.index.files[i]) is not None  # the synthetic set draws lung masks
    r = classify_tab.classify_id(ctx, i, "tiny.pt", "predicted class", 0.0)
    assert "Lung focus" in r.caption and "spread evenly would put" in r.caption and r.session.mask is not None
    truth = ctx.index.classes[ctx.index.labels[i]]  # a dataset image: its label beside the model's answer
    assert r.caption.startswith(f"**Labelled {display_name(truth)} in the dataset**: the model says")
    again = classify_tab.reexplain(ctx, tab, r.session, "tiny.pt", truth, 0.5)[tab.caption]  # another class keeps it
    assert again.startswith(f"**Labelled {display_name(truth)} in the dataset**")
    magenta = (r.overlay == np.array([255, 0, 255], dtype=np.uint8)).all(axis=2)
    assert magenta.any()  # the lung outline is drawn (at opacity 0 the rest is the grey X-ray)
    upload = str(synthetic_root / "COVID" / "images" / "COVID-1.png")
    caption = classify_tab.classify(ctx, upload, "tiny.pt", "predicted class", 0.5).caption
    assert "No lung mask for this image" in caption and "Labelled" not in caption  # an upload has no label


@pytest.mark.parametrize("size", [64, 112, 128, 160, 224])
def test_the_maps_coarseness_is_said_from_the_models_input_size(size):
    import torch

    from cxr.explain.maps import gradcam, map_stage
    from cxr.train.model import build_model

    model, _ = build_model(3)
    grid = []  # the feature map Grad-CAM weighs: the output of the last block of the stage it is taken at
    hook = getattr(model, map_stage(size))[-1].register_forward_hook(lambda m, i, out: grid.append(out.shape[-1]))
    gradcam(model, torch.zeros(1, 3, size, size))
    hook.remove()
    assert f"{grid[0]} x {grid[0]} cells" in classify_image.coarseness(size) and grid[0] >= 7  # not 4 x 4 at 112 px


def test_the_checkpoints_folder_is_kept_under_its_cap_oldest_first(ctx, trained_checkpoint):
    import os
    from dataclasses import replace

    folder = ctx.settings.checkpoints_dir
    for k, name in enumerate(["resnet18-1.pt", "resnet18-2.pt", "resnet18-3.pt"]):
        _copy_model(trained_checkpoint, folder / name, test_accuracy=0.5 + k / 10)
        os.utime(folder / name, (1000 + k, 1000 + k))
    (folder / ".resnet18-4.pt.abc.tmp").write_bytes(b"half a save")
    size = (folder / "tiny.pt").stat().st_size
    ctx.settings = replace(ctx.settings, max_checkpoint_bytes=int(2.5 * size))
    ctx.start_up()
    left = sorted(p.name for p in folder.iterdir())
    assert ".resnet18-4.pt.abc.tmp" not in left
    assert "resnet18-1.pt" not in left and "resnet18-2.pt" not in left  # the oldest went first
    assert "tiny.pt" in left and len(left) == 2


@pytest.mark.slow
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


def test_a_short_teacher_key_is_warned_about_at_start(synthetic_root, caplog):
    with caplog.at_level("WARNING", logger="demo.settings"):
        resolve_settings(str(synthetic_root), teacher_key="sesame")
    assert "teacher key has 6 characters" in caplog.text and "sesame" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="demo.settings"):
        resolve_settings(str(synthetic_root), teacher_key="x" * 16)
    assert "teacher key" not in caplog.text


def test_settings_prefer_the_real_database_folder(tmp_path, monkeypatch, synthetic_root):
    monkeypatch.delenv("CXR_DATA", raising=False)
    real = tmp_path / "data" / "COVID-19_Radiography_Dataset"
    real.mkdir(parents=True)
    assert resolve_settings(root=tmp_path).data_dir == real and not resolve_settings(root=tmp_path).banner
    monkeypatch.setenv("CXR_DATA", str(synthetic_root))
    assert resolve_settings(root=tmp_path).data_dir == synthetic_root


@pytest.mark.slow
def test_download_offline_falls_back_to_synthetic_and_says_why(tmp_path, monkeypatch):
    import cxr.data.download

    monkeypatch.delenv("CXR_DATA", raising=False)
    monkeypatch.setattr(cxr.data.download, "network_available", lambda *a, **k: False)
    settings = resolve_settings(download=True, root=tmp_path)
    assert settings.synthetic and "download of the real database failed" in settings.banner


# ---------------------------------------------------------------------------------------------- explanations
@pytest.mark.slow
def test_the_methods_are_compared_with_a_random_model_and_timed(ctx, synthetic_root):
    from demo import explain_panel

    image = str(synthetic_root / "COVID" / "images" / "COVID-1.png")
    session = classify_tab.classify(ctx, image, "tiny.pt", "predicted class", 0.5).session
    pictures, words = explain_panel.compare(ctx, session, "tiny.pt", 0.5)
    captions = [c for _, c in pictures]
    assert len(pictures) == 6 and captions[0].startswith("Grad-CAM · ") and captions[3].startswith("Grad-CAM, random weights")
    assert all(c.endswith(" s") for c in captions) and words.count("\n- **") == 3 and "nan" not in words
    assert "about" in explain_panel.button_label(ctx, "tiny.pt").value  # the expected time, before it runs
    with pytest.raises(gr.Error, match="Drop an X-ray"):
        explain_panel.compare(ctx, None, "tiny.pt", 0.5)


def test_the_curves_of_a_time_budget_run_span_its_steps_not_its_epoch_cap():
    from demo.job import Snapshot

    step = dict(step=100, total_steps=18_000, train_images_per_sec=64.0, eta_s=50.0, epoch=5)
    budget = {"time_budget_s": 170.0, "batch_size": 32}
    assert train_tab.expected_steps(Snapshot(status="running", config=budget, last_step=step)) == 200  # 2 steps/s
    assert train_tab.expected_steps(Snapshot(status="done", config=budget, last_step=step)) == 100
    assert train_tab.expected_steps(Snapshot(status="running", config={"batch_size": 32}, last_step=step)) == 18_000
    assert train_tab.expected_steps(Snapshot()) == 0


def test_one_models_label_is_the_label_the_lists_show(ctx):
    entry = next(m for m in ctx.models() if m.name == "tiny.pt")
    assert ctx.label_of("tiny.pt") == entry.label
    assert ctx.label_of("gone.pt") is None and ctx.label_of("../tiny.pt") is None
