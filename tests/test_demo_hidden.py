"""A model trained with its lungs hidden, in every tab (handlers called directly): Classify, Evaluate, the methods
side by side and the Train tab's attention strip draw what it never saw and say so in one sentence, and the
finished run's shortcut lesson sends the class to the methods side by side."""

import gradio as gr
import numpy as np
import pytest

from cxr.explain.hidden import NO_MASK_SENTENCE, SENTENCE
from cxr.train.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from demo import classify_image, classify_tab, evaluate_tab, train_status
from demo.attention_strip import attention_view
from demo.job import Snapshot
from demo.labels import METHODS_PANEL

MAGENTA = (255, 0, 255)
PLAIN, BOX, MASK = "tiny.pt", "box.pt", "mask.pt"


def magenta(picture) -> int:
    return int((np.asarray(picture)[..., :3] == MAGENTA).all(-1).sum())


@pytest.fixture
def hidden(ctx, trained_checkpoint):
    """The context with two more copies of the tiny model, saved as if trained with the lungs hidden (box, mask)."""
    payload, ckpt = read_checkpoint_file(trained_checkpoint), load_checkpoint(trained_checkpoint)
    for name, mode in ((BOX, "box"), (MASK, "mask")):
        save_checkpoint(ctx.settings.checkpoints_dir / name, ckpt.model, ckpt.classes, ckpt.image_size,
                        {**payload["config"], "hide_lungs": mode}, payload["metrics"], step=payload["step"],
                        synthetic=payload["synthetic"])
    return ctx


@pytest.fixture
def tab(hidden):
    with gr.Blocks():
        return classify_tab.build(hidden)


def test_classify_outlines_the_hidden_box_and_says_so(hidden, tab):
    xray = str(hidden.index.files[0])  # a file dropped into the box: no lung mask, so the plain model outlines nothing
    plain = classify_tab.classify_upload(hidden, tab, xray, PLAIN, classify_tab.PREDICTED, 0.5)
    box = classify_tab.classify_upload(hidden, tab, xray, BOX, classify_tab.PREDICTED, 0.5)
    assert magenta(box[tab.overlay]) > 50 and magenta(plain[tab.overlay]) == 0
    assert SENTENCE in box[tab.caption] and SENTENCE not in plain[tab.caption]
    assert np.array_equal(box[tab.original], plain[tab.original])  # "Your X-ray" stays whole beside the map
    redrawn = classify_tab.reblend(box[tab.session], 0.2)  # the opacity slider keeps the outline
    assert magenta(redrawn) == magenta(box[tab.overlay])


def test_a_mask_model_says_an_upload_has_no_mask_and_hides_a_dataset_images_lungs(hidden, tab):
    upload = classify_tab.classify_upload(hidden, tab, str(hidden.index.files[0]), MASK, classify_tab.PREDICTED, 0.5)
    assert NO_MASK_SENTENCE in upload[tab.caption] and magenta(upload[tab.overlay]) == 0
    # A dataset image has its mask: the model gets it with the lungs black, as in training, and the map shows that.
    i = next(i for i in range(len(hidden.index.files)) if hidden.index.labels[i] == 0)
    mask = classify_image.classify_id(hidden, i, MASK, classify_tab.PREDICTED, 0.5)
    plain = classify_image.classify_id(hidden, i, PLAIN, classify_tab.PREDICTED, 0.5)
    assert SENTENCE in mask.caption and magenta(mask.overlay) > 50
    assert mask.probs != plain.probs  # the same weights, another input: the lungs were hidden from the mask model
    inside = mask.session.hidden.region
    assert mask.overlay[inside].mean() < plain.overlay[inside].mean()  # drawn black where the model saw black


@pytest.mark.slow
def test_the_methods_side_by_side_show_the_hidden_region(hidden):
    from demo import explain_panel

    session = classify_image.classify(hidden, str(hidden.index.files[0]), BOX, classify_tab.PREDICTED, 0.5).session
    pictures, words = explain_panel.compare(hidden, session, BOX, 0.5)
    assert all(magenta(p) > 50 for p, _ in pictures) and SENTENCE in words


def test_evaluate_says_what_the_model_never_saw_over_outlined_top_losses(hidden):
    with gr.Blocks():
        etab = evaluate_tab.build(hidden)
    box, plain = evaluate_tab.show_model(hidden, etab, BOX), evaluate_tab.show_model(hidden, etab, PLAIN)
    assert SENTENCE in box[etab.summary] and SENTENCE not in plain[etab.summary]
    tiles = [p for p, _ in box[etab.losses]["value"]]
    assert tiles and all(magenta(t) > 20 for t in tiles)
    assert all(magenta(t) == 0 for t, _ in plain[etab.losses]["value"])


def _strip(config: dict) -> Snapshot:
    files = ["COVID/images/COVID-1.png", "Normal/images/Normal-1.png", "Viral Pneumonia/images/Viral Pneumonia-1.png"]
    maps = [[[0.5] * 16] * 16] * 3
    return Snapshot(status="running", config=config, attention=[
        {"step": 4, "files": files, "classes": ["covid", "normal", "viral"], "predicted": ["covid"] * 3, "maps": maps}])


@pytest.mark.parametrize("mode", ["box", "mask"])
def test_the_attention_strip_draws_what_the_run_never_saw_under_the_sentence(ctx, mode):
    gallery, note = attention_view(ctx, _strip({"hide_lungs": mode}))
    assert len(gallery["value"]) == 3 and all(magenta(p) > 50 for p, _ in gallery["value"])
    assert note["visible"] and SENTENCE in note["value"]
    plain, quiet = attention_view(ctx, _strip({"hide_lungs": "none"}))
    assert all(magenta(p) == 0 for p, _ in plain["value"]) and not quiet["visible"]


def test_the_shortcut_lesson_sends_the_class_to_the_methods_side_by_side():
    report = {"classes": ["covid", "normal", "viral"], "count": 90}
    done = {"steps": 40, "epochs": 1.0, "seconds": 170.0, "reason": "time_budget", "checkpoint": "/x/run.pt",
            "best_val_accuracy": 0.8, "best_step": 40, "test_accuracy": 0.78, "test_report": report}
    snap = Snapshot(status="done", config={"hide_lungs": "box"}, done=done)
    text = train_status.status_text(snap, "Fast (CPU) · 09:00 · test 78.0 %")
    assert "still gets 78% right" in text and f"**{METHODS_PANEL}**" in text
    assert f"pick *Fast (CPU) · 09:00 · test 78.0 %* (**{METHODS_PANEL}** opens under the overlay)" in text
    seen = train_status.status_text(Snapshot(status="done", config={"hide_lungs": "none"}, done=done))
    assert METHODS_PANEL not in seen


def test_a_model_file_with_an_unknown_way_of_hiding_is_refused_in_a_sentence(hidden, trained_checkpoint):
    payload, ckpt = read_checkpoint_file(trained_checkpoint), load_checkpoint(trained_checkpoint)
    save_checkpoint(hidden.settings.checkpoints_dir / "odd.pt", ckpt.model, ckpt.classes, ckpt.image_size,
                    {**payload["config"], "hide_lungs": "chest"}, payload["metrics"], step=payload["step"])
    with pytest.raises(gr.Error, match="hide-lungs mode must be one of"):
        classify_image.classify(hidden, str(hidden.index.files[0]), "odd.pt", classify_tab.PREDICTED, 0.5)


def test_the_methods_panel_opens_by_itself_for_a_lungs_hidden_model(hidden):
    from demo import explain_panel

    assert explain_panel.open_for_hidden(hidden, BOX) == gr.update(open=True)
    assert explain_panel.open_for_hidden(hidden, PLAIN) == gr.skip()  # a visitor's open panel is never shut
    assert explain_panel.open_for_hidden(hidden, "gone.pt") == gr.skip()
