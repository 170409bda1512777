import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cxr.train.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from cxr.data.index import index_dataset
from cxr.train.evaluate import classification_report
from cxr.explain.figures import attention_figure, confusion_figure
from cxr.explain.card import NOTICE, card_metadata, front_matter
from cxr.explain.report import FIGURES, write_report


def copy_checkpoint(src: Path, dst: Path, **metrics) -> Path:
    """A copy of `src` with some metrics replaced (a value of None removes that metric)."""
    payload, ckpt = read_checkpoint_file(src), load_checkpoint(src)
    new = {k: v for k, v in {**payload["metrics"], **metrics}.items() if v is not None}
    return save_checkpoint(dst, ckpt.model, ckpt.classes, ckpt.image_size, payload["config"], new,
                           step=payload["step"], synthetic=payload["synthetic"])


def readme_meta(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def fake_attention(index, steps: int, side: int = 4) -> dict:
    rng = np.random.default_rng(0)
    picks = [index.labels.index(c) for c in range(3)]
    return {
        "files": [str(Path(index.files[i]).relative_to(index.root)) for i in picks],
        "classes": [index.classes[index.labels[i]] for i in picks],
        "steps": [3 * (s + 1) for s in range(steps)],
        "maps": rng.random((steps, 3, side, side)).tolist(),
    }


@pytest.fixture(scope="module")
def full_checkpoint(trained_checkpoint, synthetic_root, tmp_path_factory) -> Path:
    """The tiny checkpoint with a training history and an attention record, whether or not training wrote them."""
    index = index_dataset(synthetic_root, load_checkpoint(trained_checkpoint).classes)
    history = [{"step": s, "train_loss": 1.0 / s, "train_accuracy": 0.1 * s, "val_loss": 1.2 / s, "val_accuracy": 0.1 * s}
               for s in (3, 6)]
    return copy_checkpoint(trained_checkpoint, tmp_path_factory.mktemp("full") / "full.pt",
                           history=history, attention=fake_attention(index, steps=9))


@pytest.fixture(scope="module")
def report_dir(full_checkpoint, synthetic_root, tmp_path_factory) -> Path:
    return write_report(full_checkpoint, synthetic_root, tmp_path_factory.mktemp("report") / "card")


def test_card_front_matter_parses_and_its_accuracy_is_the_checkpoints(report_dir, full_checkpoint):
    meta = readme_meta(report_dir / "README.md")
    metrics = load_checkpoint(full_checkpoint).metrics
    assert meta["library_name"] == "pytorch" and meta["license"] == "other" and meta["license_link"].startswith("https://")
    assert {"image-classification", "medical-imaging", "chest-x-ray", "grad-cam", "education", "not-for-clinical-use"} <= set(meta["tags"])
    assert meta["metrics"] == ["accuracy", "f1"] and meta["datasets"]
    [entry] = meta["model-index"]
    [result] = entry["results"]
    assert entry["name"] and result["task"]["type"] == "image-classification"
    assert result["dataset"]["type"] and result["dataset"]["name"] and result["dataset"]["split"] == "test"
    assert all({"type", "value", "name"} <= set(m) for m in result["metrics"])
    accuracy = [m for m in result["metrics"] if m["type"] == "accuracy"]
    assert accuracy == [{"type": "accuracy", "value": metrics["test_accuracy"], "name": "Test accuracy"}]
    f1 = {m["name"]: m["value"] for m in result["metrics"] if m["type"] == "f1"}
    assert f1["Test F1 (COVID)"] == metrics["test"]["per_class"]["covid"]["f1"]


def test_card_has_every_section_and_the_notice(report_dir):
    text = (report_dir / "README.md").read_text()
    for heading in ("## The model", "## Training settings", "## Data", "## Results", "## Where it is most wrong",
                    "## Attention over training", "## Known dataset biases", "## Not a medical device"):
        assert heading in text
    assert NOTICE in text and "paediatric" in text and "recall for COVID" in text
    assert "on cpu in float32 (validation and test too" in text  # what it computed in, not only what was asked
    for name in FIGURES:
        assert f"]({name})" in text


def test_card_states_the_temperature_and_the_ece_before_and_after(trained_checkpoint, synthetic_root, tmp_path):
    ckpt = load_checkpoint(trained_checkpoint)
    record = {"temperature": 1.8, "ece_before": 0.25, "ece_after": 0.06, "fitted_on": "validation", "images": 90}
    path = save_checkpoint(tmp_path / "t.pt", ckpt.model, ckpt.classes, ckpt.image_size, ckpt.config, ckpt.metrics,
                           synthetic=ckpt.synthetic, calibration=record)
    out = write_report(path, synthetic_root, tmp_path / "card", include_weights=False)
    text = (out / "README.md").read_text()
    assert "### Calibration" in text and "**T = 1.80** was fitted on the 90 validation images" in text
    assert "0.250 before, 0.060 after" in text and "On the 9 test images the ECE is" in text
    assert json.loads((out / "metrics.json").read_text())["calibration"] == record


def test_card_of_an_uncalibrated_model_says_its_probabilities_are_its_own(report_dir):
    assert "No temperature was fitted" in (report_dir / "README.md").read_text()


def test_report_figures_exist_and_open(report_dir, full_checkpoint):
    for name in FIGURES:
        with Image.open(report_dir / name) as im:
            im.verify()
    assert (report_dir / full_checkpoint.name).stat().st_size == full_checkpoint.stat().st_size


def test_metrics_json_holds_the_test_report_roc_auc_and_top_losses(report_dir, full_checkpoint):
    data = json.loads((report_dir / "metrics.json").read_text())
    metrics = load_checkpoint(full_checkpoint).metrics
    assert data["test"] == metrics["test"] and data["test_accuracy"] == metrics["test_accuracy"]
    assert set(data["roc_auc"]) == {"covid", "normal", "viral"}
    losses = [r["loss"] for r in data["top_losses"]]
    assert losses == sorted(losses, reverse=True) and len(losses) == 8


def test_the_top_loss_table_gives_the_probability_of_the_true_class_as_the_app_does(report_dir):
    from cxr.explain.figures import share_text

    text = (report_dir / "README.md").read_text()
    assert "| file | true | probability of the true class | called | loss |" in text  # no bare "p"
    rows = {line.split(" | ")[0][3:-1]: line.split(" | ") for line in text.splitlines() if line.startswith("| `")}
    top = json.loads((report_dir / "metrics.json").read_text())["top_losses"]
    assert top and all(r["file"] in rows for r in top)
    for r in top:  # the number the Evaluate tab's caption shows beside the true class: exp(-loss)
        assert rows[r["file"]][2] == share_text(np.exp(-r["loss"]))


def test_report_publishes_no_local_paths(report_dir, synthetic_root):
    for name in ("README.md", "metrics.json"):
        text = (report_dir / name).read_text()
        assert str(synthetic_root) not in text and "/tmp" not in text


def test_card_of_synthetic_data_says_synthetic(report_dir):
    text = (report_dir / "README.md").read_text()
    assert "**Synthetic.**" in text and "synthetic" in readme_meta(report_dir / "README.md")["tags"]


def test_card_without_history_or_attention_says_what_is_missing(trained_checkpoint, synthetic_root, tmp_path):
    bare = copy_checkpoint(trained_checkpoint, tmp_path / "old.pt", history=None, attention=None)
    out = write_report(bare, synthetic_root, tmp_path / "card", include_weights=False)
    text = (out / "README.md").read_text()
    assert "no training history" in text and "no attention record" in text
    assert not (out / "curves.png").exists() and not (out / "attention.png").exists()
    assert (out / "confusion_matrix.png").exists() and (out / "top_losses.png").exists()
    assert not (out / "old.pt").exists()


@pytest.fixture(scope="module")
def odd_report(trained_checkpoint, synthetic_root, tmp_path_factory) -> Path:
    """A checkpoint whose saved test report no longer matches the data, and whose attention record is broken."""
    saved = load_checkpoint(trained_checkpoint).metrics["test"]
    k = len(saved["classes"])
    changed = {**saved, "accuracy": 1.0, "confusion_matrix": [[3 if r == c else 0 for c in range(k)] for r in range(k)]}
    tmp = tmp_path_factory.mktemp("odd")
    ckpt = copy_checkpoint(trained_checkpoint, tmp / "odd.pt", test=changed, test_accuracy=1.0,
                           attention={"files": ["a.png"], "steps": [1]})
    return write_report(ckpt, synthetic_root, tmp / "card", include_weights=False)


def test_card_keeps_the_saved_numbers_when_the_data_has_changed(odd_report):
    [result] = readme_meta(odd_report / "README.md")["model-index"][0]["results"]
    assert [m["value"] for m in result["metrics"] if m["type"] == "accuracy"] == [1.0]
    assert "roc_auc" not in {m["type"] for m in result["metrics"]}  # not measured on the saved test set
    assert "the data has probably changed" in (odd_report / "README.md").read_text()


def test_malformed_attention_is_named_in_the_card_not_fatal(odd_report):
    assert "The attention strip could not be drawn" in (odd_report / "README.md").read_text()
    assert not (odd_report / "attention.png").exists()


def test_attention_figure_shows_at_most_six_steps_always_the_last(synthetic_root):
    index = index_dataset(synthetic_root, ("covid", "normal", "viral"))
    fig = attention_figure(fake_attention(index, steps=10), index, 32)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(fig.axes) == 3 * 6 and titles[0] == "step 3" and titles[-1] == "step 30"


def test_confusion_figure_has_true_rows_predicted_columns_and_the_counts():
    # true covid x3 (2 right, 1 called viral), normal x1 (called covid), viral x2 (right)
    report = classification_report([0, 0, 0, 1, 2, 2], [0, 0, 2, 0, 2, 2], ("covid", "normal", "viral"))
    [ax] = confusion_figure(report).axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["COVID", "Normal", "Viral Pneumonia"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["COVID", "Normal", "Viral Pneumonia"]
    assert ax.get_ylabel() == "true" and ax.get_xlabel() == "predicted"
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells[(0, 0)] == "2" and cells[(0, 2)] == "1" and cells[(1, 0)] == "1" and cells[(2, 2)] == "2"
    assert cells[(1, 1)] == "0" and len(cells) == 9


def parse_front_matter(text: str) -> dict:
    assert text.startswith("---\n") and text.endswith("\n---\n")
    return yaml.safe_load(text.removeprefix("---\n").removesuffix("---\n"))


def test_front_matter_round_trips_values_yaml_would_misread():
    data = {"a": "plain", "b": "needs: quoting", "c": "yes", "d": "0.5", "e": ["x", {"f": 1.5, "g": None, "h": True}],
            "i": [], "j": {}, "k": "Pneumonie virale – enfant", "l": [[1, 2], [3]], "m": 'quote " inside',
            "n": "# not a comment", "o": "- not a list", "p": "it's", "q": 0.8666666666666667, "r": "a\nb"}
    assert parse_front_matter(front_matter(data)) == data


def test_card_metadata_survives_a_class_named_with_a_colon_and_quotes_and_numpy_floats():
    classes = ("covid", 'odd: "quoted" class', "it's #3")
    # numpy floats, as a report computed for the card (not loaded from the checkpoint) holds
    per_class = {k: {"f1": np.float64(0.5 + i / 10)} for i, k in enumerate(classes)}
    report = {"accuracy": np.float64(0.75), "macro": {"f1": np.float32(0.5)}, "per_class": per_class}
    meta = card_metadata(classes, report, {"covid": np.float64(0.9), classes[1]: None, classes[2]: 0.25}, False)
    text = front_matter(meta)
    assert text.splitlines()[1].startswith("# license:")  # the licence comment stays a YAML comment
    parsed = parse_front_matter(text)
    assert parsed == meta
    names = {m["name"] for m in parsed["model-index"][0]["results"][0]["metrics"]}
    assert 'Test F1 (odd: "quoted" class)' in names and "Test ROC AUC (it's #3, one-vs-rest)" in names
