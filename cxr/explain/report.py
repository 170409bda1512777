"""A run report: one folder per checkpoint that can be uploaded to a Hugging Face Hub model repo as it is.

`write_report` gathers a checkpoint's facts once (`cxr.explain.facts`: its own test split rebuilt and interpreted) and
writes `README.md` (the model card, `cxr.explain.card`), `metrics.json`, the figures `curves.png`,
`confusion_matrix.png`, `top_losses.png` and `attention.png` (drawn by `cxr.explain.figures`), and a copy of the
checkpoint. Only paths relative to the dataset are written: the folder is meant to be public.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from cxr.explain.card import render_card
from cxr.explain.facts import Facts, gather_facts
from cxr.explain.figures import TOP_LOSSES_SHOWN, attention_figure, confusion_figure, curves_figure, top_losses_figure

FIGURES = ("curves.png", "confusion_matrix.png", "top_losses.png", "attention.png")


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
    config = f.checkpoint.config  # a run that hid the lungs: its maps show the hidden region (cxr.explain.hidden)
    top_losses_figure(f.checkpoint.model, f.cache, f.interp, config=config).savefig(out / "top_losses.png", dpi=100)
    if not attention:
        f.missing["attention.png"] = ("This checkpoint has no attention record (it was saved before cxr tracked "
                                      "Grad-CAM during training), so there is no strip.")
        return
    try:
        attention_figure(attention, f.index, f.checkpoint.image_size, config).savefig(out / "attention.png", dpi=100)
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
        "calibration": f.checkpoint.calibration,  # T and its validation ECE, as the run fitted them ({}: none)
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
