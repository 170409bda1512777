"""The model card: the README.md of a run report, as a Hugging Face Hub model repo expects it.

`render_card` writes Hub metadata as YAML front matter (`card_metadata`, dumped by PyYAML's `safe_dump` so any class
name or path is quoted correctly), then what the model is, how it was trained, on what data, how well it does and
where it fails, the dataset's known biases and the not-a-medical-device notice (first and last). Every number comes
from `Facts` (`cxr.explain.facts`); only paths relative to the dataset are written, since the card is meant to be
public. The report folder around it is `cxr.explain.report`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cxr.data.index import display_name
from cxr.explain.facts import Facts
from cxr.explain.figures import TOP_LOSSES_SHOWN, share_text, true_probability
from cxr.explain.hidden import SENTENCE
from cxr.explain.focus import lung_focus_words, shortcut_sentence
from cxr.explain.interpret import explain_metrics
from cxr.train.calibration import BINS, Bin, Calibration, confidence_words, measure_calibration
from cxr.train.checkpoint import Checkpoint
from cxr.data.download import KAGGLE_HANDLE as DATASET_ID, KAGGLE_URL as DATASET_URL  # the Hub has no official copy

DATASET_NAME = "COVID-19 Radiography Database"
SYNTHETIC_ID, SYNTHETIC_NAME = "synthetic-chest-x-rays", "Synthetic chest X-rays (cxr make-synthetic)"
TAGS = ["image-classification", "medical-imaging", "chest-x-ray", "grad-cam", "education", "not-for-clinical-use"]
NOTICE = "A teaching and research tool, not a medical device: never use it to diagnose, treat or triage anyone."
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


def card_metadata(
    classes: tuple[str, ...], report: dict[str, Any], roc_auc: dict[str, float | None], synthetic: bool
) -> dict[str, Any]:
    """The Hub metadata, model-index included (schema: huggingface/hub-docs modelcard.md). Self-reported, so no
    `verified` field."""
    dataset_type, dataset_name = (SYNTHETIC_ID, SYNTHETIC_NAME) if synthetic else (DATASET_ID, DATASET_NAME)
    # float(): a number computed for the card may be a numpy float, which yaml.safe_dump refuses
    metrics = [{"type": "accuracy", "value": float(report["accuracy"]), "name": "Test accuracy"},
               {"type": "f1", "value": float(report["macro"]["f1"]), "name": "Test macro F1"}]
    for key in classes:
        name = display_name(key)
        metrics.append({"type": "f1", "value": float(report["per_class"][key]["f1"]), "name": f"Test F1 ({name})"})
        if roc_auc.get(key) is not None:
            metrics.append({"type": "roc_auc", "value": float(roc_auc[key]),
                            "name": f"Test ROC AUC ({name}, one-vs-rest)"})
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


def front_matter(meta: dict[str, Any]) -> str:
    """The card's front matter: the licence comment, then `meta` as block-style YAML, between `---` lines."""
    # sort_keys=False keeps the Hub's usual order (license first, model-index last); a wide line keeps each value on
    # one line, as a reader of the raw file expects.
    body = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000)
    return "\n".join(["---", *LICENSE_COMMENT, body.rstrip("\n"), "---"]) + "\n"


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
        "ImageNet normalisation."
        + (f" The size was chosen for the machine it trained on: {ckpt.plan['reason']}." if ckpt.plan.get("reason")
           else ""),
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
        *calibration_lines(f), *shortcut_lines(f),
        "### Training curves", "", curves, "",
    ]


def calibration_lines(f: Facts) -> list[str]:
    """Temperature scaling in words: T, the ECE it left on validation, and what it does on these test images."""
    c = Calibration.from_dict(f.checkpoint.calibration)
    test = measure_calibration(f.interp.probabilities, f.interp.y_true, c.temperature)
    if c.ece_after is None or c.note:
        fitted = (f"No temperature was fitted ({c.note or 'the model was saved before cxr calibrated'}): the "
                  "probabilities are the network's own (T = 1).")
    else:
        fitted = (f"After training, one temperature **T = {c.temperature:.2f}** was fitted on the {c.images} "
                  f"{c.fitted_on} images (temperature scaling, Guo et al. 2017), and every probability the model "
                  f"reports is softmax(logits / T); the chosen class never changes. Expected calibration error (ECE, "
                  f"{BINS} bins) on those images: {c.ece_before:.3f} before, {c.ece_after:.3f} after.")
    words = confidence_words([Bin(**b) for b in test["reliability"]["after"]])
    return ["### Calibration", "", fitted,
            f"On the {len(f.interp)} test images the ECE is {test['ece']['before']:.3f} before scaling and "
            f"{test['ece']['after']:.3f} after" + (f": {words}." if words else "."), ""]


def shortcut_lines(f: Facts) -> list[str]:
    """Where the model looks (lung focus), and for a lungs-hidden run the shortcut lesson against chance."""
    mode = f.checkpoint.config.get("hide_lungs", "none")
    lines = ["### Where it looks", "", lung_focus_words(f.lung_focus) + ".", ""]
    if mode != "none":
        lines += [f"**{shortcut_sentence(f.accuracy, len(f.checkpoint.classes), mode)}**", ""]
    return lines


def errors_section(f: Facts) -> list[str]:
    top = f.interp.top_losses(TOP_LOSSES_SHOWN)
    rows = [[f"`{f.relative(r.file)}`", display_name(r.true), share_text(true_probability(r)),
             display_name(r.predicted), f"{r.loss:.2f}"] for r in top]
    hidden = f.checkpoint.config.get("hide_lungs", "none") != "none"  # its maps outline what it never saw
    unseen = [f"**{SENTENCE}** The line is on every map of this card.", ""] if hidden else []
    attention = f.missing.get("attention.png", "Grad-CAM of a few fixed images at steps through training (left to "
                              "right): where the model looked as it learned.\n\n"
                              "![Grad-CAM of fixed images through training](attention.png)")
    return [
        "## Where it is most wrong: top losses", "",
        "The test images with the highest loss: the model gave their true class the lowest probability, so these are "
        "the ones it is most confidently wrong (or least sure) about. Each shows the Grad-CAM of the class it chose: "
        "where the evidence it used lies, which does not make that evidence medical.", "",
        *unseen, "![Top losses with Grad-CAM](top_losses.png)", "",
        *_table(["file", "true", "probability of the true class", "called", "loss"], rows), "",
        "## Attention over training", "", attention, "",
    ]


def render_card(f: Facts) -> str:
    """The model card: front matter, then the sections, notice first and last."""
    names = ", ".join(display_name(k) for k in f.checkpoint.classes)
    meta = card_metadata(f.checkpoint.classes, {**f.report, "accuracy": f.accuracy}, f.roc_auc, f.synthetic)
    lines = [front_matter(meta),
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
