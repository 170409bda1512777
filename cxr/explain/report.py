"""A run report: one folder per checkpoint that can be uploaded to a Hugging Face Hub model repo as it is.

`write_report` reloads a checkpoint, rebuilds its own test split, interprets it once (`cxr.explain.interpret`) and writes
`README.md` (a model card: Hub metadata in YAML front matter, then what the model is, how it was trained, on what
data, how well it does and where it fails, the dataset's known biases and the not-a-medical-device notice),
`metrics.json`, the figures `curves.png`, `confusion_matrix.png`, `top_losses.png` and `attention.png`, and a copy
of the checkpoint. The numbers in the metadata are the ones the checkpoint saved at the end of training; when the
rebuilt test set disagrees (the data changed), the card says so instead of quietly publishing other numbers. Only
paths relative to the dataset are written: the folder is meant to be public. The figures are drawn by `cxr.explain.figures`.
PyYAML is not a dependency, so `to_yaml` writes the front matter: plain dicts, lists and scalars are all it needs.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr.train.checkpoint import Checkpoint, load_checkpoint
from cxr.data.index import DatasetIndex, Split, display_name, path_below
from cxr.data.cache import ImageCache
from cxr.explain.figures import TOP_LOSSES_SHOWN, attention_figure, confusion_figure, curves_figure, top_losses_figure
from cxr.explain.focus import lung_focus_report, lung_focus_words, shortcut_sentence
from cxr.explain.interpret import Interpretation, explain_metrics, interpret_as_trained, rebuild_test_set
from cxr.data.download import KAGGLE_HANDLE as DATASET_ID, KAGGLE_URL as DATASET_URL  # the Hub has no official copy

DATASET_NAME = "COVID-19 Radiography Database"
SYNTHETIC_ID, SYNTHETIC_NAME = "synthetic-chest-x-rays", "Synthetic chest X-rays (cxr make-synthetic)"
TAGS = ["image-classification", "medical-imaging", "chest-x-ray", "grad-cam", "education", "not-for-clinical-use"]
NOTICE = "A teaching and research tool, not a medical device: never use it to diagnose, treat or triage anyone."
FIGURES = ("curves.png", "confusion_matrix.png", "top_losses.png", "attention.png")
LICENSE_COMMENT = [
    "# license: the weights were learned from the COVID-19 Radiography Database, whose Kaggle page sets its own",
    "# terms (credit the authors; the images carry no open licence), so no open licence can be claimed for them.",
]
BIASES = [
    "The database gathers images from many hospitals, countries and public collections, and each class comes from "
    "its own mix of sources, so a model can score well by recognising the source (scanner, text markers, cropping, "
    "processing) instead of the disease.",
    "All Viral Pneumonia images are of children (paediatric chest X-rays) while the other classes are mostly "
    "adults, so body size and age alone separate that class.",
    "The images are pre-processed 8-bit PNGs resized to 299x299, not the DICOM files a scanner produces; images "
    "from a clinic look different.",
    "The test set is small (30 images per class by default): one image more or less right moves accuracy by about "
    "a percentage point.",
]
CITATIONS = [
    'M. E. H. Chowdhury et al., "Can AI help in screening Viral and COVID-19 pneumonia?", IEEE Access 8, 2020.',
    'T. Rahman et al., "Exploring the effect of image enhancement techniques on COVID-19 detection using chest '
    'X-ray images", Computers in Biology and Medicine 132, 2021.',
]


# ---- YAML front matter ----

_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}  # plain words YAML reads as non-strings


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    s = str(v)
    plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_./-]*", s) and s.lower() not in _YAML_WORDS
    return s if plain else json.dumps(s)  # a JSON string is a valid double-quoted YAML scalar


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML lines for nested dicts, lists and scalars."""
    pad, lines = " " * indent, []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines += [f"{pad}{k}:", *to_yaml(v, indent + 2)]
            else:
                lines.append(f"{pad}{k}: {'{}' if v == {} else '[]' if v == [] else _scalar(v)}")
        return lines
    for item in value:
        nested = isinstance(item, (dict, list)) and item
        sub = to_yaml(item, indent + 2) if nested else [" " * (indent + 2) + _scalar(item)]
        lines += [f"{pad}- {sub[0][indent + 2:]}", *sub[1:]]
    return lines


def card_metadata(
    classes: tuple[str, ...], report: dict[str, Any], roc_auc: dict[str, float | None], synthetic: bool
) -> dict[str, Any]:
    """The Hub metadata, model-index included (schema: huggingface/hub-docs modelcard.md). Self-reported, so no
    `verified` field."""
    dataset_type, dataset_name = (SYNTHETIC_ID, SYNTHETIC_NAME) if synthetic else (DATASET_ID, DATASET_NAME)
    metrics = [{"type": "accuracy", "value": report["accuracy"], "name": "Test accuracy"},
               {"type": "f1", "value": report["macro"]["f1"], "name": "Test macro F1"}]
    for key in classes:
        name = display_name(key)
        metrics.append({"type": "f1", "value": report["per_class"][key]["f1"], "name": f"Test F1 ({name})"})
        if roc_auc.get(key) is not None:
            metrics.append({"type": "roc_auc", "value": roc_auc[key], "name": f"Test ROC AUC ({name}, one-vs-rest)"})
    model_name = "cxr-resnet18-" + "-".join(k.replace("_", "-") for k in classes) + ("-synthetic" if synthetic else "")
    return {
        "license": "other",
        "license_name": "covid-19-radiography-database-terms",
        "license_link": DATASET_URL,
        "library_name": "pytorch",
        "pipeline_tag": "image-classification",
        "tags": TAGS + (["synthetic"] if synthetic else []),
        "datasets": [dataset_type],
        "metrics": ["accuracy", "f1"],
        "model-index": [{"name": model_name, "results": [{
            "task": {"type": "image-classification", "name": "Image Classification"},
            "dataset": {"type": dataset_type, "name": dataset_name, "split": "test"},
            "metrics": metrics,
        }]}],
    }


# ---- what the card says ----

@dataclass
class Facts:
    """Everything the card, metrics.json and the figures are written from."""

    checkpoint: Checkpoint
    file_name: str
    index: DatasetIndex
    split: Split
    interp: Interpretation
    cache: ImageCache  # the decoded test images, which the top-losses sheet shows again
    report: dict[str, Any]  # the published test report: the saved one when there is one
    accuracy: float
    agrees: bool  # the rebuilt test set gives the saved confusion matrix
    notes: list[str]
    lung_focus: dict[str, Any] = field(default_factory=dict)  # see focus.lung_focus_report
    missing: dict[str, str] = field(default_factory=dict)  # figure -> why it was not drawn

    @property
    def synthetic(self) -> bool:
        return self.checkpoint.synthetic or self.index.synthetic

    @property
    def roc_auc(self) -> dict[str, float | None]:
        """ROC AUC is only ever measured on the rebuilt set, so it is published only when that set is the saved one."""
        auc = self.interp.roc_auc()
        return auc if self.agrees else {k: None for k in auc}

    def relative(self, file: str) -> str:
        return path_below(self.index.root, file)


def gather_facts(checkpoint_path: Path, data_dir: "str | Path", batch_size: int, device: "str | torch.device") -> Facts:
    ckpt = load_checkpoint(checkpoint_path, device)
    index, split, cache = rebuild_test_set(ckpt, data_dir)
    interp = interpret_as_trained(ckpt, cache, split.test, index.labels, batch_size, device)
    saved = ckpt.metrics.get("test")
    report = saved if isinstance(saved, dict) and "confusion_matrix" in saved else interp.report
    accuracy = float(ckpt.metrics.get("test_accuracy", report["accuracy"]))
    notes = [] if report is saved else ["This checkpoint saved no test report: the numbers were computed for the card."]
    notes += [f"{note[0].upper()}{note[1:]}." for note in split.notes]  # test images missing from this folder
    agrees = report["confusion_matrix"] == interp.report["confusion_matrix"]
    if not agrees:
        notes.append(
            f"Rebuilding the test split from the data folder now gives accuracy {interp.accuracy:.3f} (saved: "
            f"{accuracy:.3f}): the data has probably changed since training. The metadata and the results table keep "
            "the saved numbers; the mix-ups and the top losses come from the rebuilt set, and ROC AUC is left out."
        )
    if interp.skipped:
        notes.append(f"{len(interp.skipped)} test images could not be read and were left out of the rebuilt set.")
    focus = lung_focus_report(ckpt, index, split.test, batch_size, device)
    return Facts(ckpt, checkpoint_path.name, index, split, interp, cache, report, accuracy, agrees, notes, focus)


def _starting_weights(ckpt: Checkpoint) -> str:
    if ckpt.metrics.get("weights"):  # what training actually used, recorded by newer runs
        return str(ckpt.metrics["weights"])
    if ckpt.config.get("resume"):
        return f"resumed from {Path(str(ckpt.config['resume'])).name}"
    w = str(ckpt.config.get("weights", ""))
    return {
        "auto": "ImageNet if they were at hand at training time, else random (`--weights auto`; not recorded which)",
        "imagenet": "ImageNet (torchvision's IMAGENET1K_V1)",
        "none": "random: trained from scratch",
        "": "not recorded",
    }.get(w, f"a ResNet18 state dict from {Path(w).name}")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(x) for x in row) + " |" for row in rows)]


def _setting(key: str, value: Any) -> str:
    if key == "data":
        return Path(str(value)).name  # the folder's name, not where it sits on someone's disk
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def model_section(f: Facts) -> list[str]:
    ckpt = f.checkpoint
    saved = f", saved {ckpt.created}" if ckpt.created else ""
    return [
        "## The model", "",
        f"- torchvision **ResNet18**, its 1000-way ImageNet head replaced by a {len(ckpt.classes)}-way one.",
        f"- Classes, in output order: {', '.join(f'{display_name(k)} (`{k}`)' for k in ckpt.classes)}.",
        f"- Input: a grayscale X-ray squashed to {ckpt.image_size}x{ckpt.image_size}, repeated to 3 channels, "
        "ImageNet normalisation.",
        f"- Starting weights: {_starting_weights(ckpt)}.",
        f"- Trained for {ckpt.step} steps{saved} with cxr (`python -m cxr train`)"
        + (f", on {ckpt.metrics['device']} in {ckpt.metrics['precision']} (validation and test too; `cxr evaluate` "
           "and `predict` run in float32)." if ckpt.metrics.get("precision") else "."),
        f"- Weights: `{f.file_name}`. Load them with `cxr.train.checkpoint.load_checkpoint(path)`, or classify with "
        "`cxr.predict.Classifier(path).predict(image, explain=True)` for probabilities and a Grad-CAM.", "",
        "## Training settings", "",
        *_table(["setting", "value"], [[f"`{k}`", _setting(k, v)] for k, v in ckpt.config.items()
                                       if k not in ("out", "resume") and v not in ("", None)]), "",
    ]


def data_section(f: Facts) -> list[str]:
    parts = ("train", "val", "test")
    counts = {p: np.bincount([f.index.labels[i] for i in getattr(f.split, p)], minlength=len(f.index.classes))
              for p in parts}
    totals = f.index.counts()
    rows = [[display_name(k), *(int(counts[p][c]) for p in parts), totals[k]] for c, k in enumerate(f.index.classes)]
    rows.append(["all", *(len(getattr(f.split, p)) for p in parts), len(f.index.files)])
    source = "Synthetic images drawn by `cxr make-synthetic`" if f.synthetic else f"The [{DATASET_NAME}]({DATASET_URL})"
    return [
        "## Data", "",
        f"{source} (layout: {f.index.layout}), split per class from seed {f.checkpoint.config.get('seed', 0)}: the "
        "test images played no part in training, stopping or choosing the checkpoint.", "",
        *_table(["class", "train", "validation", "test", "total"], rows), "",
        *(f"- {n}" for n in f.split.notes), *([""] if f.split.notes else []),
    ]


def results_section(f: Facts) -> list[str]:
    classes, pc, auc = f.checkpoint.classes, f.report["per_class"], f.roc_auc
    sentences = explain_metrics(f.report, auc if f.agrees else None)
    for key, why in f.interp.roc_auc_missing().items():
        sentences[key]["roc_auc"] = f"ROC AUC for {display_name(key)}: undefined, {why}"
    rows = [[display_name(k), *(_fmt(pc[k][m]) for m in ("precision", "recall", "f1")), pc[k]["support"],
             _fmt(auc[k])] for k in classes]
    confused = [f"- {s}" for s in f.interp.confused_sentences()] or ["- none: every test image was called right"]
    curves = f.missing.get("curves.png", "![Loss and accuracy against step](curves.png)")
    return [
        "## Results", "",
        f"Test accuracy: **{f.accuracy:.1%}** on {f.report['count']} test images.", "",
        *(f"> {n}" for n in f.notes), *([""] if f.notes else []),
        *_table(["class", "precision", "recall", "F1", "support", "ROC AUC"], rows), "",
        "What the numbers mean, for this test set:", "",
        *(f"- {s}" for k in classes for s in sentences[k].values()), "",
        "![Confusion matrix: rows are the true class, columns the predicted one](confusion_matrix.png)", "",
        "Most confused (a true class called another):", "", *confused, "",
        *shortcut_lines(f),
        "### Training curves", "", curves, "",
    ]


def shortcut_lines(f: Facts) -> list[str]:
    """Where the model looks (lung focus), and for a lungs-hidden run the shortcut lesson against chance."""
    mode = f.checkpoint.config.get("hide_lungs", "none")
    lines = ["### Where it looks", "", lung_focus_words(f.lung_focus) + ".", ""]
    if mode != "none":
        lines += [f"**{shortcut_sentence(f.accuracy, len(f.checkpoint.classes), mode)}**", ""]
    return lines


def errors_section(f: Facts) -> list[str]:
    top = f.interp.top_losses(TOP_LOSSES_SHOWN)
    rows = [[f"`{f.relative(r.file)}`", display_name(r.true), display_name(r.predicted), f"{r.probability:.2f}",
             f"{r.loss:.2f}"] for r in top]
    attention = f.missing.get("attention.png", "Grad-CAM of a few fixed images at steps through training (left to "
                              "right): where the model looked as it learned.\n\n"
                              "![Grad-CAM of fixed images through training](attention.png)")
    return [
        "## Where it is most wrong: top losses", "",
        "The test images with the highest loss: the model gave their true class the lowest probability, so these are "
        "the ones it is most confidently wrong (or least sure) about. Each shows the Grad-CAM of the class it chose: "
        "where the evidence it used lies, which does not make that evidence medical.", "",
        "![Top losses with Grad-CAM](top_losses.png)", "",
        *_table(["file", "true", "called", "p", "loss"], rows), "",
        "## Attention over training", "", attention, "",
    ]


def render_card(f: Facts) -> str:
    """The model card: front matter, then the sections, notice first and last."""
    names = ", ".join(display_name(k) for k in f.checkpoint.classes)
    meta = card_metadata(f.checkpoint.classes, {**f.report, "accuracy": f.accuracy}, f.roc_auc, f.synthetic)
    lines = ["---", *LICENSE_COMMENT, *to_yaml(meta), "---", "",
             f"# ResNet18 chest X-ray classifier: {names}{' (synthetic)' if f.synthetic else ''}", ""]
    if f.synthetic:
        lines += ["> **Synthetic.** This model was trained and tested on synthetic images drawn by "
                  "`cxr make-synthetic`, not on real X-rays: its numbers say nothing about real chest X-rays.", ""]
    lines += [f"> **Not a medical device.** {NOTICE}", ""]
    lines += model_section(f) + data_section(f) + results_section(f) + errors_section(f)
    lines += ["## Known dataset biases", "", *(f"- {b}" for b in BIASES), "",
              "## Not a medical device", "", NOTICE, "",
              "## Data citation", "", *(f"- {c}" for c in CITATIONS), ""]
    return "\n".join(lines)


def write_figures(f: Facts, out: Path) -> None:
    """Draw what the checkpoint allows; for what it does not, record in `f.missing` the sentence the card shows."""
    for name in FIGURES:  # a figure left from an earlier report must not pass for this checkpoint's
        (out / name).unlink(missing_ok=True)
    history, attention = f.checkpoint.metrics.get("history"), f.checkpoint.metrics.get("attention")
    if history:
        curves_figure(history, target=float(f.checkpoint.config.get("target_accuracy") or 0)).savefig(out / "curves.png", dpi=100)
    else:
        f.missing["curves.png"] = ("This checkpoint has no training history (it was saved before cxr recorded one), "
                                   "so there are no curves.")
    confusion_figure(f.report).savefig(out / "confusion_matrix.png", dpi=100)
    top_losses_figure(f.checkpoint.model, f.cache, f.interp).savefig(out / "top_losses.png", dpi=100)
    if not attention:
        f.missing["attention.png"] = ("This checkpoint has no attention record (it was saved before cxr tracked "
                                      "Grad-CAM during training), so there is no strip.")
        return
    try:
        attention_figure(attention, f.index, f.checkpoint.image_size).savefig(out / "attention.png", dpi=100)
    except ValueError as e:
        f.missing["attention.png"] = f"The attention strip could not be drawn: {e}."


def metrics_json(f: Facts) -> dict[str, Any]:
    return {
        "checkpoint": f.file_name, "synthetic": f.synthetic, "test_accuracy": f.accuracy, "test": f.report,
        "roc_auc": f.roc_auc, "roc_auc_missing": f.interp.roc_auc_missing(),
        "top_losses": [{**r.to_dict(), "file": f.relative(r.file)} for r in f.interp.top_losses(TOP_LOSSES_SHOWN)],
        "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in f.interp.most_confused()],
        "recomputed": None if f.agrees else {"accuracy": f.interp.accuracy, "test": f.interp.report},
        "lung_focus": {k: v for k, v in f.lung_focus.items() if k != "per_image"},
        "notes": f.notes,
    }


def write_report(
    checkpoint_path: "str | Path",
    data_dir: "str | Path",
    out_dir: "str | Path",
    include_weights: bool = True,
    batch_size: int = 32,
    device: "str | torch.device" = "cpu",
) -> Path:
    """Write the report folder for a checkpoint, scored on its own test split under `data_dir`; return the folder."""
    checkpoint_path, out = Path(checkpoint_path), Path(out_dir)
    facts = gather_facts(checkpoint_path, data_dir, batch_size, device)
    out.mkdir(parents=True, exist_ok=True)
    write_figures(facts, out)
    (out / "metrics.json").write_text(json.dumps(metrics_json(facts), indent=2) + "\n")
    (out / "README.md").write_text(render_card(facts))
    if include_weights:  # the Hub repo then holds the model itself, not only its description
        shutil.copyfile(checkpoint_path, out / checkpoint_path.name)
    return out
