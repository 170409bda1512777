"""Where the model looks, measured: the share of its Grad-CAM inside the lungs, and the shortcut lesson in a line.

`lung_focus_report` needs the lung masks of the Kaggle v4 release (`masks/` beside `images/`); without them it says
so rather than guess. A map spread evenly over the image would score the lungs' share of the image, so each
class's focus is reported beside that baseline. `shortcut_sentence` words a run trained and tested with the lungs
hidden: accuracy well above chance means the model found something outside the lungs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cxr.data.index import DatasetIndex, display_name
from cxr.data.cache import ImageCache
from cxr.data.lungs import HideLungs, area_share, has_masks, hide_pixels, lung_focus
from cxr.data.transforms import to_model_input

if TYPE_CHECKING:
    import torch

    from cxr.train.checkpoint import Checkpoint


def lung_focus_report(checkpoint: "Checkpoint", index: DatasetIndex, ids: Sequence[int], batch_size: int = 32,
                      device: "str | torch.device" = "cpu") -> dict[str, Any]:
    """Where the model looks, measured: the share of each image's Grad-CAM mass inside its lung mask, the mean per
    class, and beside it the lungs' share of the image (what a map spread evenly would score). Where the data has
    no lung masks, says so instead of guessing."""
    from cxr.explain.maps import gradcam  # Captum and matplotlib load only when a map is drawn

    files = [index.files[i] for i in ids]
    if not has_masks(files):
        return {"available": False, "reason": "these images have no lung masks (the Kaggle v4 release keeps them in "
                "masks/ beside images/), so lung focus cannot be measured"}
    cache = ImageCache(index.files, checkpoint.image_size, masks=True)
    hide = HideLungs.from_config(checkpoint.config)
    per_image, by_class = [], {c: ([], []) for c in checkpoint.classes}
    for start in range(0, len(ids), batch_size):
        images, ok = cache.get(list(ids[start : start + batch_size]))
        if not ok:
            continue
        masks = cache.get_masks(ok)
        x = to_model_input(hide_pixels(images, hide, masks if hide.needs_masks else None).to(device))
        maps, _ = gradcam(checkpoint.model, x)
        for i, heat, mask in zip(ok, maps, masks[:, 0].numpy()):
            focus, area = lung_focus(heat, mask), area_share(mask)
            key = checkpoint.classes[index.labels[i]]
            per_image.append({"file": Path(index.files[i]).name, "class": key, "lung_focus": focus, "area_share": area})
            if focus == focus:  # an empty map has no share to count
                by_class[key][0].append(focus)
                by_class[key][1].append(area)
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    return {"available": True,
            "per_class": {c: {"lung_focus": mean(f), "area_share": mean(a), "images": len(f)} for c, (f, a) in by_class.items()},
            "per_image": per_image}


def lung_focus_words(report: dict[str, Any]) -> str:
    """The lung-focus report in a line per class, each beside its even-spread baseline."""
    if not report.get("available"):
        return f"lung focus: not measured, {report.get('reason', 'no lung masks')}"
    parts = [f"{display_name(c)} {v['lung_focus']:.0%} (lungs are {v['area_share']:.0%} of the image)"
             for c, v in report["per_class"].items() if v["lung_focus"] is not None]
    return "lung focus, the share of Grad-CAM inside the lungs: " + "; ".join(parts)


def shortcut_sentence(accuracy: float, classes: int, mode: str) -> str:
    """The shortcut lesson in one sentence: accuracy with the lungs hidden, against chance."""
    chance = 1 / classes
    verdict = ("it is using something other than the lungs" if accuracy > chance + 0.1
               else "without the lungs it is close to guessing")
    return (f"With the lungs hidden ({mode}) it still gets {accuracy:.0%} right; chance is {chance:.0%}: {verdict}.")
