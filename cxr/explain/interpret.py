"""Error analysis: run a model once over labelled images, keep every image's outcome, and derive the views from it.

Modelled on fastai's `ClassificationInterpretation`: `interpret` computes each image's class probabilities and its
cross-entropy loss once, and an `Interpretation` answers the questions a student asks from those numbers alone,
with no second pass over the model: which images is it most confidently wrong about (`top_losses`), which classes
does it mix up (`most_confused`, `confusion_matrix`, `cell`), how well does its probability rank each class
(`roc_auc`, no sklearn) and what do its metrics mean for these counts (`explanations`). Precision, recall and F1
come from `cxr.train.evaluate.classification_report`: the numbers training reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr.data.index import DatasetIndex, Split, display_name, index_dataset, split_for
from cxr.data.cache import ImageCache
from cxr.train.evaluate import classification_report
from cxr.data.lungs import HideLungs, hide_pixels
from cxr.data.transforms import to_model_input

if TYPE_CHECKING:
    from cxr.train.checkpoint import Checkpoint


@dataclass(frozen=True)
class Record:
    """One image's outcome: its file, true and predicted class keys, the predicted class's probability, its loss."""

    file: str
    true: str
    predicted: str
    probability: float
    loss: float
    row: int  # position in the Interpretation (and in its `ids`), to fetch the image again

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "true": self.true, "predicted": self.predicted,
                "probability": self.probability, "loss": self.loss}


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """One-vs-rest ROC AUC as the Mann-Whitney U statistic: the share of (positive, negative) pairs in which the
    positive scores higher, a tie counting one half. Average ranks give the same count in O(n log n)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs positives and negatives, got {n_pos} and {n_neg}")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Tied scores share the mean of the ranks they span: that is what makes a tie count as half a win.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _percent(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}%" if b else "undefined"


def explain_metrics(
    report: dict[str, Any], roc_auc: dict[str, float | None] | None = None
) -> dict[str, dict[str, str]]:
    """A plain sentence per class and metric, from a `classification_report` dict (its counts, not new ones) and
    optional ROC AUC values (None where undefined)."""
    classes, cm = report["classes"], report["confusion_matrix"]
    out = {}
    for c, key in enumerate(classes):
        name, m = display_name(key), report["per_class"][key]
        found, support, called = cm[c][c], sum(cm[c]), sum(row[c] for row in cm)
        auc = (roc_auc or {}).get(key)
        out[key] = {
            "recall": f"recall for {name}: of the {support} {name} X-rays, it found {found} "
                      f"({_percent(found, support)})",
            "precision": (
                f"precision for {name}: of the {called} X-rays it called {name}, {found} were {name} "
                f"({_percent(found, called)})" if called else
                f"precision for {name}: it called no X-ray {name}, so there is nothing to be right about (shown as 0)"
            ),
            "f1": f"F1 for {name}: {m['f1']:.2f}, the balance of the two (low if either precision or recall is low)",
            "roc_auc": (
                f"ROC AUC for {name}: {auc:.2f}, the chance that a random {name} X-ray gets a higher {name} "
                "probability than a random other X-ray (0.5 is guessing, 1.0 perfect)" if auc is not None else
                f"ROC AUC for {name}: undefined, it needs X-rays of this class and of others" if roc_auc is not None
                else f"ROC AUC for {name}: not computed"
            ),
        }
    return out


@dataclass
class Interpretation:
    """Every image's outcome on one labelled set. Build it with `interpret`; all views derive from these fields."""

    classes: tuple[str, ...]
    files: list[str]
    y_true: np.ndarray  # [n] int class indices
    probabilities: np.ndarray  # [n, k] softmax outputs
    losses: np.ndarray  # [n] per-image cross-entropy
    ids: list[int] = field(default_factory=list)  # dataset ids (indices into DatasetIndex.files), when known
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable file -> why, left out of everything

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.files = [str(f) for f in self.files]
        self.y_true = np.asarray(self.y_true, dtype=np.int64)
        self.probabilities = np.asarray(self.probabilities, dtype=np.float64)
        self.losses = np.asarray(self.losses, dtype=np.float64)
        n, k = len(self.files), len(self.classes)
        if self.probabilities.shape != (n, k) or self.y_true.shape != (n,) or self.losses.shape != (n,):
            raise ValueError(
                f"an interpretation of {n} files and {k} classes needs labels [{n}], probabilities [{n}, {k}] and "
                f"losses [{n}], got {self.y_true.shape}, {self.probabilities.shape} and {self.losses.shape}"
            )
        if n and not ((0 <= self.y_true).all() and (self.y_true < k).all()):
            raise ValueError(f"true labels must lie in 0..{k - 1} for {k} classes")
        if self.ids and len(self.ids) != n:
            raise ValueError(f"ids must name one dataset image per file ({n}), got {len(self.ids)}")
        self.y_pred = self.probabilities.argmax(1) if n else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    @cached_property
    def report(self) -> dict[str, Any]:
        """Accuracy, per-class precision / recall / F1 / support and the confusion matrix, as training reports them."""
        return classification_report(self.y_true.tolist(), self.y_pred.tolist(), self.classes)

    @property
    def accuracy(self) -> float:
        return self.report["accuracy"]

    def _class(self, c: "str | int") -> int:
        if isinstance(c, (int, np.integer)) and 0 <= c < len(self.classes):
            return int(c)
        if c in self.classes:
            return self.classes.index(c)
        raise ValueError(f"unknown class {c!r}; choose from {', '.join(self.classes)} or an index")

    def record(self, row: int) -> Record:
        p = int(self.y_pred[row])
        return Record(self.files[row], self.classes[self.y_true[row]], self.classes[p],
                      float(self.probabilities[row, p]), float(self.losses[row]), row)

    def top_losses(self, k: int | None = None, largest: bool = True) -> list[Record]:
        """The `k` images with the largest losses (most confidently wrong first), or the smallest with
        `largest=False` (most confidently right first). Equal losses keep their original order."""
        if k is not None and k < 0:
            raise ValueError(f"k must be a count of images (0 or more), got {k}")
        order = np.argsort(-self.losses if largest else self.losses, kind="stable")
        return [self.record(int(r)) for r in order[:k]]

    def confusion_matrix(self) -> np.ndarray:
        """[k, k] counts; rows are the true class, columns the predicted one."""
        return np.array(self.report["confusion_matrix"], dtype=np.int64).reshape(len(self.classes), len(self.classes))

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(true, predicted, count) for every mix-up seen at least `min_count` times, most frequent first."""
        cm = self.confusion_matrix()
        k = len(self.classes)
        pairs = [(self.classes[t], self.classes[p], int(cm[t, p]))
                 for t in range(k) for p in range(k) if t != p and cm[t, p] >= min_count]
        return sorted(pairs, key=lambda x: -x[2])  # stable: ties stay in class order

    def confused_sentences(self, min_count: int = 1) -> list[str]:
        """most_confused in words: 'COVID called Normal: 6 times'."""
        return [f"{display_name(t)} called {display_name(p)}: {n} time{'s' if n != 1 else ''}"
                for t, p, n in self.most_confused(min_count)]

    def cell(self, true: "str | int", predicted: "str | int") -> list[Record]:
        """The images in one confusion-matrix cell, largest loss first."""
        t, p = self._class(true), self._class(predicted)
        rows = np.flatnonzero((self.y_true == t) & (self.y_pred == p))
        return sorted((self.record(int(r)) for r in rows), key=lambda rec: -rec.loss)

    def roc_auc(self) -> dict[str, float | None]:
        """Per class, one-vs-rest ROC AUC of that class's probability; None where the set lacks positives or
        negatives for it (see `roc_auc_missing` for why)."""
        out = {}
        for c, key in enumerate(self.classes):
            positive = self.y_true == c
            out[key] = rank_auc(self.probabilities[:, c], positive) if 0 < positive.sum() < len(self) else None
        return out

    def roc_auc_missing(self) -> dict[str, str]:
        """Why ROC AUC is undefined for a class, for each class where it is."""
        out = {}
        for c, key in enumerate(self.classes):
            n_pos = int((self.y_true == c).sum())
            if n_pos == 0:
                out[key] = f"there are no {display_name(key)} X-rays in this set"
            elif n_pos == len(self):
                out[key] = f"every X-ray in this set is {display_name(key)}"
        return out

    def per_class(self) -> dict[str, dict[str, Any]]:
        """Per class: precision, recall, f1, support (from classification_report) and roc_auc."""
        auc = self.roc_auc()
        return {key: {**self.report["per_class"][key], "roc_auc": auc[key]} for key in self.classes}

    def explanations(self) -> dict[str, dict[str, str]]:
        """Per class, a plain sentence for recall, precision, F1 and ROC AUC, using this set's counts."""
        out = explain_metrics(self.report, self.roc_auc())
        for key, why in self.roc_auc_missing().items():
            out[key]["roc_auc"] = f"ROC AUC for {display_name(key)}: undefined, {why}"
        return out

    def to_dict(self, top_k: int = 10) -> dict[str, Any]:
        """JSON-ready summary: the report, ROC AUC per class (null where undefined), the top losses, the mix-ups."""
        return {
            "count": len(self),
            "accuracy": self.accuracy,
            "report": self.report,
            "roc_auc": self.roc_auc(),
            "top_losses": [r.to_dict() for r in self.top_losses(top_k)],
            "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in self.most_confused()],
            "skipped": self.skipped,
        }


def interpret(model: nn.Module, cache: ImageCache, ids: Sequence[int], labels: Sequence[int], classes: Sequence[str],
              batch_size: int = 32, device: "str | torch.device" = "cpu", tta_flip: bool = False,
              hide: "HideLungs | None" = None) -> Interpretation:
    """Run `model` once over the images `ids` of `cache` (labels[i] is image i's class, as in `iterate_batches`)
    and keep each one's probabilities and loss. With `tta_flip` each image's probabilities are averaged with its
    mirror image's, as `evaluate` does for a run trained with that setting; with `hide`, the lungs are hidden as
    the run hid them in training. Unreadable files are left out and listed in `skipped`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    was_training = model.training
    model.eval()  # batch norm uses its running statistics, dropout is off: the model as it would be used
    kept, y_true, probs, losses = [], [], [], []
    try:
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                images, ok = cache.get(list(ids[start : start + batch_size]))
                if not ok:
                    continue
                y = torch.tensor([labels[i] for i in ok], dtype=torch.long, device=device)
                if hide is not None and hide.enabled:
                    images = hide_pixels(images, hide, cache.get_masks(ok) if hide.needs_masks else None)
                x = to_model_input(images.to(device))
                logits = model(x).float()
                if tta_flip:
                    p = (logits.softmax(1) + model(x.flip(-1)).float().softmax(1)) / 2
                    loss = F.nll_loss(p.clamp_min(1e-12).log(), y, reduction="none")
                else:
                    # reduction="none": one loss per image, which is what ranks the mistakes.
                    p, loss = logits.softmax(1), F.cross_entropy(logits, y, reduction="none")
                losses.append(loss.cpu())
                probs.append(p.cpu())
                y_true += y.tolist()
                kept += ok
    finally:
        model.train(was_training)
    skipped = {str(cache.files[i]): cache.bad[i] for i in ids if i in cache.bad}
    if not kept:
        raise ValueError("nothing to interpret: no readable images among the ones given")
    return Interpretation(
        classes=tuple(classes), files=[str(cache.files[i]) for i in kept], y_true=np.array(y_true),
        probabilities=torch.cat(probs).double().numpy(), losses=torch.cat(losses).double().numpy(),
        ids=list(kept), skipped=skipped,
    )


def cache_for(checkpoint: "Checkpoint", index: DatasetIndex) -> ImageCache:
    """Decoded images at the checkpoint's own size (with lung masks when its run hid them by mask)."""
    return ImageCache(index.files, checkpoint.image_size, masks=HideLungs.from_config(checkpoint.config).needs_masks)


def interpret_as_trained(checkpoint: "Checkpoint", cache: ImageCache, ids: Sequence[int], labels: Sequence[int],
                         batch_size: int = 32, device: "str | torch.device" = "cpu") -> Interpretation:
    """`interpret` the way the checkpoint's run evaluated: its test-time flip, its hidden lungs."""
    config = checkpoint.config
    return interpret(checkpoint.model, cache, ids, labels, checkpoint.classes, batch_size, device,
                     tta_flip=bool(config.get("tta_flip", False)), hide=HideLungs.from_config(config))


def rebuild_test_set(checkpoint: "Checkpoint", data_dir: "str | Path") -> tuple[DatasetIndex, Split, ImageCache]:
    """The listing of `data_dir` in the checkpoint's classes, its split there (`split_for`), a cache at its size."""
    index = index_dataset(data_dir, checkpoint.classes)
    return index, split_for(index, checkpoint), cache_for(checkpoint, index)


def interpret_checkpoint(
    checkpoint: "Checkpoint", data_dir: "str | Path", batch_size: int = 32, device: "str | torch.device" = "cpu"
) -> Interpretation:
    """Interpret a checkpoint on its own test split: the images it never trained on."""
    index, split, cache = rebuild_test_set(checkpoint, data_dir)
    checkpoint.model.to(device)
    return interpret_as_trained(checkpoint, cache, split.test, index.labels, batch_size, device)
