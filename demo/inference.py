"""Classify's model work for every visitor, done by one thread that batches the X-rays arriving together.

A class of thirty drops X-rays within seconds of each other while a run trains on the same two cores. Run in
Gradio's handler threads, every request would start its own intra-op threads (oversubscribing the cores the run
needs) and pay ResNet18's per-layer overhead alone. Here the handler threads only read the file and draw the
overlay; the forward pass and Grad-CAM of every waiting request go to one worker thread, which takes what is
queued (up to `max_batch` for the same model) and answers it with one Grad-CAM pass (`Classifier.explain_batch`),
on `threads()` intra-op threads: one while a run trains, so the run keeps the other core. Each answer equals the
one the image would get alone (eval mode: no image in a batch changes another's).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from PIL import Image

from cxr.data.decode_budget import DECODES
from cxr.data.images import Source
from cxr.predict import Classifier, Prediction

log = logging.getLogger(__name__)

# Classify requests handled at once: their files are read and their overlays drawn in parallel threads, and their
# model work meets in the worker's batches. More than the two cores, so that what arrives together batches.
CLASSIFY_AT_ONCE = 8


@dataclass(eq=False)  # each request is itself: compared by identity
class _Request:
    classifier: Classifier
    x: torch.Tensor  # [1, 3, S, S] model input
    target: int | None  # class index to explain; None: the predicted class
    done: Future = field(default_factory=Future)


def inference_threads(training: bool, cores: int) -> int:
    """Intra-op threads for Classify's model work: `$CXR_INFERENCE_THREADS` when set, else one while a run trains
    (the run keeps the other core) and every core otherwise."""
    forced = os.environ.get("CXR_INFERENCE_THREADS", "").strip()
    if forced.isdigit() and int(forced) > 0:
        return int(forced)
    return 1 if training else cores


class InferenceQueue:
    """`explain(classifier, x, target)` from any thread; the work runs in one worker thread, batched."""

    def __init__(self, max_batch: int = 16, threads: Callable[[], int] = torch.get_num_threads):
        self.max_batch, self.threads = max_batch, threads
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches: list[int] = []  # sizes of the latest batches (for tests and the load benchmark)

    def explain(self, classifier: Classifier, x: torch.Tensor, target: int | None = None,
                timeout: float | None = 120.0) -> tuple[list[float], np.ndarray, float | None]:
        """Probabilities, Grad-CAM map and out-of-distribution score for one model input; raises what the model work
        raised."""
        request = _Request(classifier, x, target)
        self._ensure_worker()
        self._queue.put(request)
        return request.done.result(timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="cxr-inference", daemon=True)
                self._worker.start()

    def _take(self) -> list[_Request]:
        """The next request (waiting for one), and every request queued behind it, up to `max_batch` more."""
        taken = [self._queue.get()]
        while len(taken) < self.max_batch * 4:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def _work(self) -> None:
        threads = 0
        while True:
            taken = self._take()
            wanted = max(1, int(self.threads()))
            if wanted != threads:  # torch's intra-op threads are per calling thread: this one's only
                torch.set_num_threads(wanted)
                threads = wanted
            batches = _batches(taken, self.max_batch)
            for batch in batches:
                self._answer(batch)
            self.batches = (self.batches + [len(b) for b in batches])[-64:]

    @staticmethod
    def _answer(batch: list[_Request]) -> None:
        try:
            results = batch[0].classifier.explain_batch([r.x for r in batch], [r.target for r in batch])
        except Exception as e:  # the handler raises it in its own thread: a bad request never stops the worker
            for r in batch:
                r.done.set_exception(e)
            return
        for r, result in zip(batch, results):
            r.done.set_result(result)


def predict_batched(worker: InferenceQueue, classifier: Classifier, source: "Source | Image.Image",
                    target: str | None = None) -> Prediction:
    """`classifier.predict(source, explain=True, target=target)`, with the model work done by `worker`: the file is
    read and prepared in the calling thread, the pass over the model runs batched with whatever else is waiting."""
    with DECODES.working():  # a class's burst of big uploads gives its memory back once it is over
        image = classifier.read(source)
        index = classifier.target_index(target)
        probs, heatmap, ood_score = worker.explain(classifier, classifier.model_input(image), index)
        return classifier.prediction(image, probs, heatmap, target, ood_score)


def _batches(requests: list[_Request], size: int) -> list[list[_Request]]:
    """Requests grouped by model (in order of arrival), each group cut into batches of at most `size`; only inputs of
    one shape share a batch."""
    groups: dict[tuple[int, tuple[int, ...]], list[_Request]] = {}
    for r in requests:
        groups.setdefault((id(r.classifier), tuple(r.x.shape)), []).append(r)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]
