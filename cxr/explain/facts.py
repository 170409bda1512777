"""What a run report is written from: `Facts`, gathered once per checkpoint by `gather_facts`.

`gather_facts` reloads a checkpoint, rebuilds its own test split, interprets it once (`cxr.explain.interpret`) and
measures where the model looks (`cxr.explain.focus`). The numbers it publishes are the ones the checkpoint saved at the
end of training; when the rebuilt test set disagrees (the data changed), it records a note saying so instead of
quietly publishing other numbers. The card (`cxr.explain.card`) and the report folder (`cxr.explain.report`) read
these facts and compute nothing of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cxr.data.cache import ImageCache
from cxr.data.index import DatasetIndex, Split, path_below
from cxr.explain.focus import lung_focus_report
from cxr.explain.interpret import Interpretation, interpret_as_trained, rebuild_test_set
from cxr.train.checkpoint import Checkpoint, load_checkpoint


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
    """The facts for one checkpoint, scored on its own test split under `data_dir`."""
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
