"""Checkpoints written in the background, so training does not wait for the disk.

Writing a ResNet18 checkpoint (45 MB, flushed to disk before it is renamed into place) takes tens of milliseconds;
a GPU run that keeps its best weights at every evaluation would stand still for that long every few steps. The
loop hands `CheckpointWriter.save` a snapshot it will not change again (the best weights are already a copy; the
resumable -last file is copied on the device first, which is fast) and goes on; one thread writes, with
`save_checkpoint`, so each file is still replaced atomically.

A save for a path whose previous write is not finished waits for it. So by the time a run reports an evaluation,
the checkpoint of the evaluation before is on disk: a process killed mid-run loses at most the newest one, and a
disk slower than the evaluations slows training rather than building a queue. `flush` waits for everything queued
and raises the first error a write met (a full disk fails the run as it would have without the thread); `save`
raises it too, at the next call.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxr.train.checkpoint import save_checkpoint


def snapshot(model: nn.Module, optimizer: "torch.optim.Optimizer | None" = None
             ) -> tuple[dict[str, torch.Tensor], "dict[str, Any] | None"]:
    """Copies of the model's (and optimiser's) state that later steps cannot change, on their own device."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None


class CheckpointWriter:
    """One background thread that writes the checkpoints `save` queues. Use it as a context manager, or call
    `close` when done; `seconds` is the time spent writing, off the caller's thread."""

    def __init__(self) -> None:
        self._pending: dict[Path, dict[str, Any]] = {}  # path -> save_checkpoint arguments, oldest first
        self._writing: Path | None = None  # the path being written now
        self._error: BaseException | None = None
        self._closed = False
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self.seconds = 0.0
        self.written = 0

    def save(self, path: "str | Path", state: dict[str, torch.Tensor], **kwargs: Any) -> None:
        """Queue `save_checkpoint(path, state, **kwargs)` and return, once the previous write to `path` (if any) is
        done. `state` (and an `optimizer` state dict, and the metrics) must not change afterwards: pass a snapshot.
        Raises a previous write's error."""
        path = Path(path)
        with self._cv:
            self._cv.wait_for(lambda: (path not in self._pending and self._writing != path) or self._error is not None)
            self._raise()
            if self._closed:
                raise RuntimeError("this checkpoint writer is closed")
            if self._thread is None:  # started before anything is queued: a thread that cannot start loses nothing
                thread = threading.Thread(target=self._loop, name="cxr-checkpoints", daemon=True)
                thread.start()
                self._thread = thread
            self._pending[path] = {"model": state, **kwargs}
            self._cv.notify_all()

    def flush(self) -> None:
        """Wait until every queued checkpoint is on disk; raise the first error a write met."""
        with self._cv:
            self._cv.wait_for(lambda: not self._pending and self._writing is None)
        self._raise()

    def close(self) -> None:
        """Write what is queued, then end the thread. Errors are kept for `flush`, not raised: a run that is
        failing for another reason reports that one."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def error(self) -> BaseException | None:
        """The first error a write met, if any (then nothing more is written)."""
        return self._error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed, and nothing left to write
                path = next(iter(self._pending))
                job = self._pending.pop(path)
                self._writing = path
            t0 = time.perf_counter()
            try:
                if self._error is None:  # after a failed write, the disk is not trusted with more
                    save_checkpoint(path, **job)
                    self.written += 1
            except BaseException as e:  # noqa: BLE001 - handed to the training thread, which raises it
                self._error = e
            finally:
                self.seconds += time.perf_counter() - t0
                with self._cv:
                    self._writing = None
                    self._cv.notify_all()
