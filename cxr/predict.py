"""Inference on single images: class probabilities, and optionally a Grad-CAM explanation.

`Classifier` wraps a loaded checkpoint and runs the same preprocessing as training (via `cxr.transforms`), so an
image is treated exactly as the model saw its training data. It is safe to share between threads: inference
mutates nothing, and Grad-CAM's hook lives on a per-call module. On a CUDA device the trunk of the network runs as
a captured CUDA graph (`cxr.explain.GraphedTrunk`): at batch 1 launching kernels, not arithmetic, is the cost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import Checkpoint, load_checkpoint
from .explain import GraphedTrunk, Trunk, gradcam, logits_of
from .images import Source, read_xray
from .lungs import HideLungs, hide_pixels
from .transforms import prepare_image, to_model_input

# Images are read at most this large: enough for the overlay on screen, small enough for any upload.
DISPLAY_SIDE = 1024


@dataclass
class Prediction:
    label: str  # class key with the highest probability
    probabilities: dict[str, float]  # class key -> probability, in checkpoint class order
    image: Image.Image  # the decoded grayscale image (at most DISPLAY_SIDE on its longer side)
    heatmap: np.ndarray | None = None  # Grad-CAM [S, S] in [0, 1] at model input size, when asked for
    target: str | None = None  # the class the heatmap explains


class Classifier:
    def __init__(self, checkpoint: "Checkpoint | str | Path", device: "str | torch.device" = "cpu"):
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device)
        self.device = torch.device(device)
        self.model = self.checkpoint.model.to(self.device).eval()
        self.classes = self.checkpoint.classes
        config = self.checkpoint.config
        self.hide = HideLungs(config.get("hide_lungs", "none"), tuple(config.get("hide_box", HideLungs().box)))
        self._trunk: GraphedTrunk | None = None
        self._trunk_lock = threading.Lock()

    def trunk(self, x: torch.Tensor) -> Trunk | None:
        """The graphed trunk on CUDA (captured on first use, for the model's one input shape); None on a CPU."""
        if self.device.type != "cuda":
            return None
        with self._trunk_lock:
            if self._trunk is None:
                self._trunk = GraphedTrunk(self.model, x)
        return self._trunk

    def model_input(self, image: Image.Image) -> torch.Tensor:
        """Gray PIL image -> normalised [1, 3, S, S] tensor, exactly as evaluation prepares images (a model trained
        with the lungs hidden by a box sees them hidden here too; a single upload has no lung mask to hide by)."""
        pixels = prepare_image(image, self.checkpoint.image_size).unsqueeze(0)
        if self.hide.mode == "box":
            pixels = hide_pixels(pixels, self.hide)
        return to_model_input(pixels.to(self.device))

    def predict(self, source: "Source | Image.Image", explain: bool = False, target: "str | None" = None) -> Prediction:
        """Probabilities for one image (path, bytes, file or PIL image); with `explain`, a Grad-CAM for `target`
        (a class key; default: the predicted class). Raises ValueError for unreadable images or unknown targets."""
        image = source.convert("L") if isinstance(source, Image.Image) else read_xray(source, max_side=DISPLAY_SIDE)
        x = self.model_input(image)
        heatmap = None
        if explain:
            if target is not None and target not in self.classes:
                raise ValueError(f"unknown target class {target!r}; this model knows {', '.join(self.classes)}")
            t = None if target is None else self.classes.index(target)
            maps, logits = gradcam(self.model, x, target=t, trunk=self.trunk(x))
            heatmap = maps[0]
        else:
            logits = logits_of(self.model, x, self.trunk(x))
        probs = logits.float().softmax(1)[0].cpu().tolist()
        label = self.classes[int(np.argmax(probs))]
        return Prediction(
            label=label,
            probabilities=dict(zip(self.classes, probs)),
            image=image,
            heatmap=heatmap,
            target=(target or label) if explain else None,
        )
