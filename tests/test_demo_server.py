"""The running server, through gradio_client: what a Space's API users and the browser both rely on."""

import json
import time

import pytest
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def client(server):
    url, _ = server
    return Client(url, verbose=False)


def test_classify_an_image_over_http(client, synthetic_root):
    image = synthetic_root / "Viral Pneumonia" / "images" / "Viral Pneumonia-2.png"
    probs, overlay, _original, caption, _targets, ood_note = client.predict(  # ClassifyTab.panels' order
        handle_file(str(image)), "tiny.pt", "predicted class", 0.5, api_name="/classify")
    assert probs["label"] in ("COVID", "Normal", "Viral Pneumonia")
    assert {c["label"] for c in probs["confidences"]} == {"COVID", "Normal", "Viral Pneumonia"}
    assert overlay and "Grad-CAM for" in caption
    # The out-of-distribution note, sent as an update: shown exactly when it has something to say.
    assert ood_note["visible"] == bool(ood_note["value"])


def test_a_bad_upload_is_one_sentence_and_the_server_keeps_going(client, tmp_path, synthetic_root):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), "tiny.pt", "predicted class", 0.5, api_name="/classify")
    good = synthetic_root / "COVID" / "images" / "COVID-2.png"
    assert client.predict(handle_file(str(good)), "tiny.pt", "predicted class", 0.5, api_name="/classify")[0]["label"]


def test_new_batch_over_http(client):
    gallery, compare = client.predict(["hflip", "rotate"], api_name="/new_batch")  # State is not sent
    assert len(gallery) == 12 and len(compare) == 6


# A learning rate too small to reach the target, so the run is still going when we press Stop. By keyword: the API
# takes settings by name, and any left out keep the preset's values.
SETTINGS = dict(preset="fast-cpu", image_size=64, batch_size=8, lr=1e-7, epochs=50, max_steps=0, eval_every=1,
                target_accuracy=0.99, augment=["hflip"], weights="none", seed=0, teacher_key="")


@pytest.mark.slow
def test_start_watch_and_stop_a_training_run(client, server):
    _, ctx = server
    assert "Starting" in client.predict(**SETTINGS, api_name="/start_training")
    with pytest.raises(Exception, match="already going"):
        client.predict(**SETTINGS, api_name="/start_training")
    deadline, state = time.time() + 120, {}
    while time.time() < deadline:
        state = client.predict(api_name="/training_status")
        if state["evaluations"]:
            break
        time.sleep(0.5)
    assert state["status"] == "running" and "images/s" in state["text"], state
    # Anyone may read the status: it names files, never where the server keeps them.
    shown = json.dumps(state)
    assert str(ctx.settings.checkpoints_dir) not in shown and str(ctx.settings.data_dir) not in shown
    assert state["started"]["checkpoint"].startswith("resnet18-") and "/" not in state["started"]["checkpoint"]
    assert state["evaluations"][0]["step"] == 1 and 0 <= state["evaluations"][0]["val_accuracy"] <= 1
    client.predict(teacher_key="", api_name="/stop_training")
    assert ctx.job.wait(60)
    state = client.predict(api_name="/training_status")
    assert state["status"] == "done" and "stopped by a user" in state["text"]


def test_a_preset_alone_trains_with_that_presets_settings(client, server, monkeypatch):
    # gradio_client fills each setting left out with the endpoint's default: None ("the preset's value"), not the
    # value the page's widget shows (the Fast preset's).
    from dataclasses import asdict

    import torch

    from cxr.train.presets import apply_preset, default_preset
    from demo.train_settings import SETTING_NAMES

    _, ctx = server
    assert ctx.job.wait(60)
    monkeypatch.setattr(ctx.job, "_train", lambda cfg, stop=None: iter(()))  # keep the settings, train nothing
    assert "Starting" in client.predict(preset="recipe", api_name="/start_training")
    assert ctx.job.wait(60)
    config, recipe = ctx.job.snapshot().config, asdict(apply_preset("recipe"))
    assert config["preset"] == "recipe" and {k: config[k] for k in SETTING_NAMES} == {k: recipe[k] for k in SETTING_NAMES}
    client.predict(api_name="/start_training")  # no preset either: the one this machine starts with
    assert ctx.job.wait(60) and ctx.job.snapshot().config["preset"] == default_preset(torch.cuda.is_available())


def test_the_public_api_has_its_six_endpoints(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/classify", "/new_batch", "/start_training", "/stop_training", "/training_status", "/evaluate_model"}


def test_bad_settings_over_the_api_get_one_sentence(client):
    # The Number widget's own bounds (from cxr.train.config.BOUNDS) refuse it first; the server's check says the same.
    with pytest.raises(Exception, match=r"greater than maximum value 1\.0|learning rate must be between") as info:
        client.predict(**{**SETTINGS, "lr": 1e30}, api_name="/start_training")
    assert "Traceback" not in str(info.value)
    with pytest.raises(Exception, match="not in the list of choices|choose one of the presets offered"):
        client.predict(**{**SETTINGS, "preset": "gpu"}, api_name="/start_training")  # no CUDA on this machine
