"""The Evaluate tab's handlers called directly, over the synthetic data and the tiny checkpoint: no server."""

import json
import math
import re
import zipfile
from dataclasses import fields, replace
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch

from cxr.data.index import display_name
from cxr.explain.figures import share_text
from cxr.explain.interpret import Interpretation, Record
from demo import evaluate_analysis, evaluate_tab
from demo.evaluate_tab import RIGHT, WRONG
from tests.demo_fixtures import make_context

MODEL = "tiny.pt"


@pytest.fixture(scope="module")
def shared(synthetic_root, trained_checkpoint, tmp_path_factory):
    """One context for the tests that only read: the model is interpreted once for all of them, as on a server."""
    return make_context(synthetic_root, tmp_path_factory.mktemp("eval-ckpt"), trained_checkpoint)


@pytest.fixture(scope="module")
def tab(shared):
    """The tab's components: the handlers' answers are read by them."""
    with gr.Blocks():
        return evaluate_tab.build(shared)


def view(ctx, tab, name=MODEL) -> dict:
    """What `show_model` shows, by the name of each component in the tab."""
    out = evaluate_tab.show_model(ctx, tab, name)
    parts = {f.name: getattr(tab, f.name) for f in fields(tab)}
    return {name: out[c] for name, c in parts.items() if isinstance(c, gr.blocks.Block) and c in out}


def shown_losses(ctx, tab, name, which) -> tuple:
    out = evaluate_tab.show_losses(ctx, tab, name, which)
    return out[tab.losses], out[tab.loss_ids]


def shown_cell(ctx, tab, name, index) -> tuple:
    out = evaluate_tab.select_cell(ctx, tab, name, SimpleNamespace(index=index))
    return out[tab.cell], out[tab.cell_text], out[tab.cell_ids]


def test_view_has_one_table_row_per_class_and_words_for_each(tab, shared):
    out = view(shared, tab)
    names = [display_name(k) for k in ("covid", "normal", "viral")]
    assert list(out["metrics"]["class"]) == names
    assert list(out["metrics"].columns) == ["class", "precision", "recall", "F1", "ROC AUC", "test images"]
    assert out["metrics"]["test images"].sum() == 9  # 3 test images per class in the tiny run
    confusion = out["confusion"].data  # a Styler: the counts are its data
    assert list(confusion["true class"]) == names and list(confusion.columns[1:]) == [f"called {n}" for n in names]
    assert confusion.iloc[:, 1:].to_numpy().sum() == 9
    for name in names:
        assert f"**{name}**" in out["words"] and f"recall for {name}" in out["words"]
    assert "test X-rays" in out["summary"] and "Synthetic" in out["summary"] and out["which"] == WRONG
    assert out["cell"]["visible"] is False and out["download_btn"]["visible"] is False


def test_view_shows_the_reliability_diagram_and_says_no_temperature_was_fitted(tab, shared):
    out = view(shared, tab)
    axes = out["reliability"].axes
    assert [ax.get_title().splitlines()[0] for ax in axes] == [
        "Before: the network's own percentages", "After: no temperature fitted (T = 1)"]
    assert "ECE" in axes[0].get_title() and "Before scaling:" in out["calibration"]
    assert "**No temperature was fitted** (only 9 validation images" in out["calibration"]


def test_calibration_words_give_the_fitted_temperature_and_both_errors(shared):
    analysis = evaluate_analysis.analyse(shared, MODEL)
    fitted = evaluate_analysis.Calibration(temperature=2.0, ece_before=0.3, ece_after=0.1, fitted_on="validation",
                                           images=90)
    measured = evaluate_analysis.measure_calibration(analysis.interp.probabilities, analysis.interp.y_true, 2.0)
    text = evaluate_analysis.calibration_text(replace(analysis, calibration=measured, fitted=fitted))
    assert "T = 2.00** (fitted on its 90 validation X-rays)" in text
    assert f"ECE: {measured['ece']['before']:.3f}" in text and f"ECE {measured['ece']['after']:.3f}" in text
    assert re.search(r"when it says about \d+ %, it is right \d+ % of the time \(\d+ X-rays?\)", text)


def test_the_tab_shows_the_calibrated_percentages_classify_shows(synthetic_root, trained_checkpoint, tmp_path):
    from cxr.train.checkpoint import read_checkpoint_file

    raw = read_checkpoint_file(trained_checkpoint)
    raw["calibration"] = {"temperature": 2.0, "fitted_on": "validation", "images": 90, "ece_before": 0.3,
                          "ece_after": 0.1}
    folder = tmp_path / "models"
    folder.mkdir()
    torch.save(raw, folder / MODEL)
    ctx = make_context(synthetic_root, folder)
    analysis = evaluate_analysis.analyse(ctx, MODEL)
    clf = ctx.classifier(MODEL)
    first = analysis.interp.files[0]
    predicted = clf.predict(first).probabilities
    assert list(analysis.interp.probabilities[0]) == pytest.approx(list(predicted.values()), abs=1e-5)
    assert analysis.calibration["temperature"] == 2.0 and analysis.fitted.images == 90


def percents(captions) -> list[float]:
    """The probability in brackets in each caption, as a number ("<1 %" as 0.5, ">99 %" as 99.5)."""
    out = []
    for c in captions:
        sign, value = re.search(r"\((<|>)?(\d+) %\)", c).groups()
        out.append(int(value) + {"<": -0.5, ">": 0.5, None: 0}[sign])
    return out


@pytest.mark.parametrize("which", [WRONG, RIGHT], ids=["wrong", "right"])
def test_top_losses_are_sorted_by_loss_and_captions_give_the_true_class_probability(tab, shared, which):
    shown, ids = shown_losses(shared, tab, MODEL, which)
    gallery = shown["value"]
    assert shown["visible"] == bool(gallery)  # an empty gallery is hidden, not shown as a blank box
    interp = evaluate_tab.analyse(shared, MODEL).interp
    records = evaluate_tab.shown_records(interp, which)
    assert len(gallery) == len(ids) == len(records)
    losses = [r.loss for r in records]
    assert losses == sorted(losses, reverse=which == WRONG)
    for (image, caption), r in zip(gallery, records):
        assert image.dtype == np.uint8 and image.shape == (evaluate_analysis.THUMB, evaluate_analysis.THUMB, 3)
        on_true = interp.probabilities[r.row, interp.y_true[r.row]]
        true, called = display_name(r.true), display_name(r.predicted)
        assert caption == f"true {true} ({share_text(on_true)}) · called {called}"
        assert (r.true != r.predicted) == (which == WRONG)
    shares = percents(c for _, c in gallery)
    assert shares == sorted(shares, reverse=which == RIGHT)  # what is shown follows the order


def synthetic_interpretation() -> Interpretation:
    """The walk-through's list: wrong calls given 73, 91, 89 and 86 % on the called class, and 2, 5, 8 and 10 % on
    the true one (the order of their losses); then two right calls."""
    probabilities = [[0.02, 0.73, 0.25], [0.05, 0.91, 0.04], [0.08, 0.89, 0.03], [0.10, 0.86, 0.04],
                     [0.97, 0.02, 0.01], [0.60, 0.30, 0.10]]
    y_true = [0, 0, 0, 0, 0, 0]
    losses = [-math.log(p[t]) for p, t in zip(probabilities, y_true)]
    return Interpretation(("covid", "normal", "viral"), [f"{i}.png" for i in range(6)], y_true, probabilities, losses)


@pytest.mark.parametrize("which", [WRONG, RIGHT], ids=["wrong", "right"])
def test_caption_percentages_follow_the_order_of_the_list(which):
    captions = [evaluate_tab.caption(r) for r in evaluate_tab.shown_records(synthetic_interpretation(), which)]
    if which == WRONG:  # the called class had 73, 91, 89, 86 %: shown, that looked unsorted
        assert captions[0] == "true COVID (2 %) · called Normal"
        assert percents(captions) == [2, 5, 8, 10]
    else:
        assert captions == ["true COVID (97 %) · called COVID", "true COVID (60 %) · called COVID"]


@pytest.mark.parametrize("p, shown", [(0.001, "<1 %"), (0.02, "2 %"), (0.5, "50 %"), (0.994, "99 %"),
                                      (0.9999, ">99 %")])
def test_caption_never_rounds_a_probability_to_zero_or_certainty(p, shown):
    record = Record("x.png", "covid", "normal", probability=1 - p, loss=-math.log(p), row=0)
    assert evaluate_tab.caption(record) == f"true COVID ({shown}) · called Normal"


def test_captions_fit_a_thumbnail_two_lines_at_most():
    # COLUMNS to a row at 1024 px leaves about 200 px a caption: two lines of about 30 characters.
    longest = Record("x.png", "viral", "viral", probability=0.5, loss=-math.log(0.5), row=0)
    assert evaluate_tab.COLUMNS >= 4 and len(evaluate_tab.caption(longest)) <= 60


def test_the_heading_and_switch_say_what_the_order_follows(shared):
    assert "lowest probability on the true class" in WRONG and "highest probability on the true class" in RIGHT
    with gr.Blocks() as demo:
        evaluate_tab.build(shared)
    texts = [c["props"].get("value") or "" for c in demo.get_config_file()["components"]]
    heading = next(t for t in texts if isinstance(t, str) and t.startswith("### Top losses"))
    assert "lowest probability" in heading and "most sure" not in heading


def test_wrong_and_right_galleries_together_show_every_test_image(tab, shared):
    _, wrong = shown_losses(shared, tab, MODEL, WRONG)
    _, right = shown_losses(shared, tab, MODEL, RIGHT)
    assert sorted(wrong + right) == sorted(shared.split_for(MODEL).test)  # 9 images: fewer than a gallery holds


def test_clicking_a_picture_gives_its_dataset_id_for_classify(tab, shared):
    shown, ids = shown_losses(shared, tab, MODEL, WRONG)
    if not ids:  # a model with no mistakes: click one of its right calls instead
        shown, ids = shown_losses(shared, tab, MODEL, RIGHT)
    picked = evaluate_tab.open_image(ids, SimpleNamespace(index=0))
    assert picked == ids[0] and picked in shared.split_for(MODEL).test
    caption = shown["value"][0][1]
    assert caption.startswith(f"true {display_name(shared.index.classes[shared.index.labels[picked]])} ")
    with pytest.raises(gr.Error):
        evaluate_tab.open_image(ids, SimpleNamespace(index=len(ids)))


def test_cell_selection_returns_exactly_the_images_of_that_cell(tab, shared):
    analysis = evaluate_tab.analyse(shared, MODEL)
    cm = analysis.interp.confusion_matrix()
    for t, p in product(range(3), repeat=2):
        shown, text, ids = shown_cell(shared, tab, MODEL, [t, p + 1])
        gallery = shown["value"]
        assert shown["visible"] == bool(cm[t, p])
        expected = [analysis.app_ids[r.row] for r in analysis.interp.cell(t, p)]
        assert sorted(ids) == sorted(expected) and len(ids) == len(gallery) == cm[t, p]
        true, called = display_name(analysis.interp.classes[t]), display_name(analysis.interp.classes[p])
        assert f"{true} X-rays the model called {called}: {cm[t, p]}" in text
        assert all(re.fullmatch(rf"true {true} \([<>]?\d+ %\) · called {called}", c) for _, c in gallery)
        assert all(shared.index.labels[i] == t for i in ids)
    gallery, text, ids = shown_cell(shared, tab, MODEL, [0, 0])  # the class-name column
    assert "not a class name" in text


def test_second_visit_is_served_from_the_cache_without_recomputing(tab, ctx, monkeypatch):
    calls = {"interpret": 0, "cam": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(evaluate_analysis, "interpret_as_trained", counted("interpret", evaluate_analysis.interpret_as_trained))
    monkeypatch.setattr(evaluate_analysis, "cam_overlays", counted("cam", evaluate_analysis.cam_overlays))
    first = view(ctx, tab)
    second = view(ctx, tab)
    shown_losses(ctx, tab, MODEL, RIGHT)
    assert calls == {"interpret": 1, "cam": 1}  # both galleries' overlays were drawn with the first view
    assert first["loss_ids"] == second["loss_ids"]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first["losses"]["value"], second["losses"]["value"]))
    t, p = next(zip(*np.nonzero(evaluate_tab.analyse(ctx, MODEL).interp.confusion_matrix())))
    shown_cell(ctx, tab, MODEL, [t, p + 1])
    assert calls["interpret"] == 1 and calls["cam"] <= 1  # the cell's images were all drawn already


@pytest.mark.parametrize("name", ["missing.pt", "../tiny.pt", "tiny.txt", 42])
def test_bad_model_names_give_one_sentence(tab, shared, name):
    with pytest.raises(gr.Error, match="choose"):
        evaluate_tab.show_model(shared, tab, name)
    with pytest.raises(gr.Error, match="choose"):
        evaluate_tab.evaluate_model(shared, name)
    with pytest.raises(gr.Error, match="choose"):
        evaluate_tab.report_zip(shared, name)


def test_unexpected_errors_are_a_plain_sentence(tab, ctx, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(evaluate_analysis, "interpret_as_trained", broken)
    with pytest.raises(gr.Error) as err:
        evaluate_tab.show_model(ctx, tab, MODEL)
    assert err.value.message == evaluate_tab.FAILED


def test_no_model_says_so_in_one_sentence(tab, synthetic_root, tmp_path):
    empty = make_context(synthetic_root, tmp_path / "none")
    out = view(empty, tab, empty.default_model())
    assert out["summary"].startswith("**No trained model yet.**") and out["losses"]["visible"] is False
    assert out["body"]["visible"] is False  # no empty tables under the sentence
    assert out["metrics"].empty


@pytest.mark.slow
def test_report_zip_holds_the_card_and_its_figures(shared):
    path = evaluate_tab.report_zip(shared, MODEL)
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    assert {"README.md", "metrics.json", "confusion_matrix.png", "top_losses.png"} <= names
    assert not any(n.endswith(".pt") for n in names)
    assert evaluate_tab.report_zip(shared, MODEL) == path  # made once per model file
    assert evaluate_tab.prepare_report(shared, MODEL) == {"__type__": "update", "value": path, "visible": True}
    # Written again (the memo forgot it, or the model file changed): it replaces its old zip, nothing piles up.
    again = evaluate_tab._write_zip(shared.checkpoint_path(MODEL), shared.settings.data_dir, Path(path).parent)
    assert again == path and [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]


def test_api_result_is_json_with_roc_auc_and_no_server_paths(shared):
    out = evaluate_tab.evaluate_model(shared, MODEL)
    text = json.dumps(out)
    assert out["model"] == MODEL and set(out["roc_auc"]) == {"covid", "normal", "viral"}
    assert out["count"] == 9 and len(out["top_losses"]) == 9
    assert out["temperature"] == 1.0 and set(out["ece"]) == {"before", "after"}
    assert str(shared.settings.data_dir) not in text and all(not r["file"].startswith("/") for r in out["top_losses"])


def test_build_exposes_the_parts_the_page_wires(shared):
    with gr.Blocks() as demo:
        parts = evaluate_tab.build(shared)
    assert len(parts.open_events) == 2 and parts.open_id is not None and parts.report_btn is not None
    assert parts.model.value == MODEL and [c[1] for c in parts.model.choices] == [MODEL]
    apis = {d["api_name"]: d["api_visibility"] for d in demo.get_config_file()["dependencies"]}
    assert apis["evaluate_model"] == "public"
    assert [v for k, v in apis.items() if k != "evaluate_model"] == ["private"] * (len(apis) - 1)


def test_a_model_still_training_says_so_beside_its_test_score(tab, shared, monkeypatch):
    assert "still training" not in view(shared, tab)["summary"] and view(shared, tab)["body"]["visible"] is True
    monkeypatch.setattr(shared, "running_checkpoint", lambda: MODEL)
    text = view(shared, tab)["summary"]
    assert "right**" in text and "still training" in text and "never sees the test set" in text


def test_a_model_whose_test_images_are_partly_gone_is_scored_on_the_rest_and_says_so(tab, synthetic_root,
                                                                                       trained_checkpoint, tmp_path):
    import torch

    from cxr.train.checkpoint import read_checkpoint_file

    raw = read_checkpoint_file(trained_checkpoint)
    raw["split"]["test"][0] = "COVID/images/not-here-any-more.png"  # a test image removed from the folder since
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save(raw, folder / "moved.pt")
    ctx = make_context(synthetic_root, folder)
    out = view(ctx, tab, "moved.pt")
    assert out["metrics"]["test images"].sum() == 8
    assert "1 of this model's 9 test images are not in this folder: the other 8 are used" in out["summary"]
