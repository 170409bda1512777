"""Evaluation: run a model over labelled batches and report what a clinician-minded reader asks for.

Accuracy alone hides which class is being missed, so the report has per-class precision (of the images called X,
how many are X), recall (of the X images, how many were found), F1 and support, their macro averages, and the
confusion matrix (rows: true class, columns: predicted). The same field names appear in events, JSON output and
the app's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cxr.data.index import display_name
from cxr.data.transforms import to_model_input


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    y_true: list[int]
    y_pred: list[int]
    probabilities: torch.Tensor  # [n, classes]: what interpretation (top losses, ROC AUC) is derived from
    # [n, classes]: the logits, what temperature scaling divides (with tta_flip: the log of the averaged
    # probabilities, which softmax turns back into them)
    logits: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return len(self.y_true)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: "str | torch.device" = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    tta_flip: bool = False,
) -> EvalResult:
    """Mean cross-entropy and accuracy over uint8 image batches, with no augmentation; with `tta_flip`, each image
    and its mirror image are both scored and their probabilities averaged. Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    total_loss, y_true, y_pred, probs, logits = 0.0, [], [], [], []
    try:
        for images, labels in batches:
            x = to_model_input(images.to(device, non_blocking=True))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
                z = model(x).float()
                p = z.softmax(1)
                if tta_flip:  # test-time augmentation: the mirror image is as valid a view as the original
                    p = (p + model(x.flip(-1)).float().softmax(1)) / 2
                    z = p.clamp_min(1e-12).log()
            total_loss += F.nll_loss(p.clamp_min(1e-12).log(), labels, reduction="sum").item()
            probs.append(p.cpu())
            logits.append(z.cpu())
            y_pred += p.argmax(1).tolist()
            y_true += labels.tolist()
    finally:
        model.train(was_training)
    n = len(y_true)
    if n == 0:
        raise ValueError("nothing to evaluate: no readable images in the evaluation set")
    correct = sum(int(t == p) for t, p in zip(y_true, y_pred))
    return EvalResult(total_loss / n, correct / n, y_true, y_pred, torch.cat(probs), torch.cat(logits))


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro averages and the confusion matrix."""
    k = len(classes)
    if any(not 0 <= v < k for v in list(y_true) + list(y_pred)):
        raise ValueError(f"labels must lie in 0..{k - 1} for {k} classes")
    cm = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred):
        cm[t][p] += 1
    per_class = {}
    for c, name in enumerate(classes):
        tp = cm[c][c]
        predicted = sum(cm[r][c] for r in range(k))
        support = sum(cm[c])
        precision, recall = _safe_div(tp, predicted), _safe_div(tp, support)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall),
            "support": support,
        }
    macro = {m: sum(v[m] for v in per_class.values()) / k for m in ("precision", "recall", "f1")}
    n = len(y_true)
    return {
        "accuracy": _safe_div(sum(cm[i][i] for i in range(k)), n),
        "classes": list(classes),
        "confusion_matrix": cm,
        "per_class": per_class,
        "macro": macro,
        "count": n,
    }


def format_report(report: dict[str, Any]) -> str:
    """A classification report as a plain-text table plus the confusion matrix."""
    names = [display_name(c) for c in report["classes"]]
    width = max(len(n) for n in names + ["macro avg"]) + 2
    lines = [f"{'':{width}}precision  recall  f1     support"]
    for key, name in zip(report["classes"], names):
        m = report["per_class"][key]
        lines.append(f"{name:{width}}{m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    mac = report["macro"]
    lines.append(f"{'macro avg':{width}}{mac['precision']:9.3f}  {mac['recall']:6.3f}  {mac['f1']:5.3f}  {report['count']:7d}")
    lines.append(f"accuracy {report['accuracy']:.3f}   confusion matrix (rows: true, columns: predicted):")
    cw = max(len(n) for n in names) + 2
    lines.append(" " * width + "".join(f"{n:>{cw}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name:{width}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)
