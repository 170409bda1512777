"""Inference on single images: class probabilities, and optionally a Grad-CAM explanation.

`Classifier` wraps a loaded checkpoint and runs the same preprocessing as training (via `cxr.data.transforms`), so an
image is treated exactly as the model saw its training data. Its probabilities are calibrated: the logits are
divided by the temperature the run fitted on its validation images (`cxr.train.calibration`). It is safe to share
between threads: inference mutates nothing, and Grad-CAM's hook lives on a per-call module. On a CUDA device a prediction, and a Grad-CAM with
its prediction, each run as a CUDA graph captured on first use (`CudaGraphCall`): at batch 1 launching
kernels from Python, not arithmetic, is the cost, and a replay launches them all at once. Every prediction also
says whether the image looks like the model's training X-rays (`cxr.explain.ood`), from the pooled features of the
same pass; a checkpoint without that check (saved before its run ended, or by an older cxr) says nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from cxr.train.calibration import apply_temperature
from cxr.train.checkpoint import Checkpoint, load_checkpoint
from cxr.explain.maps import explain_tensors, pooled_and_logits
from cxr.explain.ood import OodFit
from cxr.data.images import Source, read_xray
from cxr.data.lungs import HideLungs, hide_pixels
from cxr.data.transforms import prepare_image, to_model_input

log = logging.getLogger(__name__)

# Images are read at most this large: enough for the overlay on screen, small enough for any upload.
DISPLAY_SIDE = 1024


class CudaGraphCall:
    """`fn(x)` (a tuple of tensors) captured once as a CUDA graph for `example`'s shape, and replayed for later inputs
    of that shape while `model` is in eval mode; anything else runs `fn` as usual.

    At batch 1 a GPU forward pass is bound by launching its ~60 small kernels one by one from Python, not by
    arithmetic, and Grad-CAM adds Captum's hooks and a backward pass on top; replaying a captured graph launches
    every kernel of the whole computation at once. Capture errors are thread-local: a run training on the same GPU
    in another thread goes on (it only waits while the capture starts, which synchronises the device and empties
    the allocator's cache). Safe to share between threads that use the default stream: replays take turns, and
    each caller's copy of the outputs is queued before the next replay can overwrite them."""

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], example: torch.Tensor, model: nn.Module):
        self.fn, self.model, self.lock = fn, model, threading.Lock()
        self.static_x = example.detach().clone()
        side = torch.cuda.Stream(example.device)  # warm up off the default stream, as CUDA graph capture needs
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # cuDNN picks its kernels, lazy modules load: none of that may happen in capture
                fn(self.static_x)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_out = fn(self.static_x)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.shape != self.static_x.shape or x.device != self.static_x.device or self.model.training:
            return self.fn(x)
        with self.lock:
            self.static_x.copy_(x)
            self.graph.replay()
            return tuple(t.clone() for t in self.static_out)


def inference_device(cuda_available: bool | None = None) -> torch.device:
    """Where a server classifies: the GPU when there is one (a batch-1 Grad-CAM replays a CUDA graph in about a
    millisecond there), else the CPU."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    return torch.device("cuda" if cuda else "cpu")


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits, without gradients."""
    with torch.no_grad():
        return model(x)


@dataclass
class Prediction:
    label: str  # class key with the highest probability
    probabilities: dict[str, float]  # class key -> probability, in checkpoint class order
    image: Image.Image  # the decoded grayscale image (at most DISPLAY_SIDE on its longer side)
    heatmap: np.ndarray | None = None  # Grad-CAM [S, S] in [0, 1] at model input size, when asked for
    target: str | None = None  # the class the heatmap explains
    ood_score: float | None = None  # distance from the training X-rays in units of the threshold; None: no check

    @property
    def looks_like_training_data(self) -> bool | None:
        """Whether the image passes the model's out-of-distribution check; None when the model has none."""
        return None if self.ood_score is None else self.ood_score <= 1.0


def _forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pooled, logits = pooled_and_logits(model, x)
    return logits, pooled


class Classifier:
    def __init__(self, checkpoint: "Checkpoint | str | Path", device: "str | torch.device" = "cpu"):
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device)
        self.device = torch.device(device)
        self.model = self.checkpoint.model.to(self.device).eval()
        self.classes = self.checkpoint.classes
        self.temperature = self.checkpoint.temperature  # fitted at the end of training; 1 for older files
        config = self.checkpoint.config
        self.hide = HideLungs.from_config(config)
        self.ood = OodFit.from_dict(self.checkpoint.ood)  # None: this checkpoint carries no check
        self._graphs: dict[tuple, CudaGraphCall | None] = {}  # None: capture failed, that call runs eagerly
        self._graphs_lock = threading.Lock()

    def _on_device(self, key: tuple, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor
                   ) -> tuple[torch.Tensor, ...]:
        """`fn(x)`; on CUDA replayed from a graph captured on first use, one per `key` and input shape. `fn` must
        not hold this Classifier (the graphs would keep it, and their GPU memory, alive in a cycle)."""
        if self.device.type != "cuda":
            return fn(x)
        key = (*key, tuple(x.shape))
        with self._graphs_lock:
            if key not in self._graphs:
                try:
                    self._graphs[key] = CudaGraphCall(fn, x, self.model)
                except RuntimeError as e:  # e.g. cuDNN searching for kernels mid-capture: correct, only slower
                    log.warning("CUDA graph capture failed for %s; running it without a graph: %s", key, e)
                    self._graphs[key] = None
            graph = self._graphs[key]
        return graph(x) if graph is not None else fn(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits [B, classes] of a model input (see `model_input`) and the pooled features they came from."""
        return self._on_device(("logits",), functools.partial(_forward, self.model), x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities [B, classes]: softmax(logits / T). The largest logit stays the largest, so the
        predicted class is the one the raw logits give."""
        return apply_temperature(logits.float().cpu(), self.temperature)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits [B, classes] of a model input (see `model_input`)."""
        return self.forward(x)[0]

    def ood_scores(self, pooled: torch.Tensor) -> list[float | None]:
        """Each image's out-of-distribution score from its pooled features (`cxr.explain.ood`); None without a check."""
        return [None] * len(pooled) if self.ood is None else self.ood.score(pooled).tolist()

    def gradcam(self, x: torch.Tensor, target: "int | list[int | None] | None" = None) -> tuple[np.ndarray, torch.Tensor]:
        """Grad-CAM maps [B, S, S] in [0, 1] for class index `target` (one for all, one per image with None for that
        image's predicted class, or None: each image's predicted class) and the logits, from one pass over a model
        input, as `cxr.explain.maps.gradcam` computes them."""
        maps, logits, _ = self.gradcam_pass(x, target)
        return maps, logits

    def gradcam_pass(self, x: torch.Tensor, target: "int | list[int | None] | None" = None
                     ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """`gradcam`'s maps and logits, and the pooled features of the same pass."""
        target = None if target is None else int(target) if np.ndim(target) == 0 else list(target)
        fn = functools.partial(explain_tensors, self.model, method="gradcam", target=target)
        # Per-image targets copy an index from the host, which a CUDA graph cannot hold: those run eagerly.
        maps, logits, pooled = fn(x) if isinstance(target, list) else self._on_device(("gradcam", target), fn, x)
        return maps.cpu().numpy(), logits, pooled

    def model_input(self, image: Image.Image) -> torch.Tensor:
        """Gray PIL image -> normalised [1, 3, S, S] tensor, exactly as evaluation prepares images (a model trained
        with the lungs hidden by a box sees them hidden here too; a single upload has no lung mask to hide by)."""
        pixels = prepare_image(image, self.checkpoint.image_size).unsqueeze(0)
        if self.hide.mode == "box":
            pixels = hide_pixels(pixels, self.hide)
        return to_model_input(pixels.to(self.device))

    @staticmethod
    def read(source: "Source | Image.Image") -> Image.Image:
        """The gray image `predict` classifies: a PIL image as it is, a file read at most DISPLAY_SIDE px."""
        return source.convert("L") if isinstance(source, Image.Image) else read_xray(source, max_side=DISPLAY_SIDE)

    def target_index(self, target: "str | None") -> int | None:
        """A class key as this model's class index (None: the predicted class). Raises ValueError for unknown keys."""
        if target is None:
            return None
        if target not in self.classes:
            raise ValueError(f"unknown target class {target!r}; this model knows {', '.join(self.classes)}")
        return self.classes.index(target)

    def explain_batch(self, inputs: list[torch.Tensor], targets: list[int | None]
                      ) -> list[tuple[list[float], np.ndarray, float | None]]:
        """Probabilities, a Grad-CAM map and the out-of-distribution score (None without a check) for each of several
        model inputs ([1, 3, S, S] each, from `model_input`), in one pass over them all: what a server does with the
        X-rays a class sends at once. `targets`: one class index per input, None for its predicted class. Each result
        equals what the input alone would get: the model is in eval mode, so no image in a batch changes another's
        answer."""
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        x = torch.cat(inputs).to(self.device)
        maps, logits, pooled = self.gradcam_pass(x, None if all(t is None for t in targets) else targets)
        probs = self.probabilities(logits).tolist()
        return list(zip(probs, maps, self.ood_scores(pooled)))

    def prediction(self, image: Image.Image, probs: list[float], heatmap: np.ndarray | None,
                   target: "str | None", ood_score: float | None = None) -> Prediction:
        """A Prediction from one image's probabilities (and map, and out-of-distribution score), as `predict` returns
        it."""
        label = self.classes[int(np.argmax(probs))]
        return Prediction(label=label, probabilities=dict(zip(self.classes, probs)), image=image, heatmap=heatmap,
                          target=(target or label) if heatmap is not None else None, ood_score=ood_score)

    def predict(self, source: "Source | Image.Image", explain: bool = False, target: "str | None" = None) -> Prediction:
        """Probabilities for one image (path, bytes, file or PIL image); with `explain`, a Grad-CAM for `target`
        (a class key; default: the predicted class). Raises ValueError for unreadable images or unknown targets."""
        image = self.read(source)
        x = self.model_input(image)
        heatmap = None
        if explain:
            maps, logits, pooled = self.gradcam_pass(x, self.target_index(target))
            heatmap = maps[0]
        else:
            logits, pooled = self.forward(x)
        return self.prediction(image, self.probabilities(logits)[0].tolist(), heatmap, target, self.ood_scores(pooled)[0])
