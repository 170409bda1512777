"""The app's one training job: `fit` driven in a single worker thread, its events kept for every visitor.

A browser tab is not the owner of a training run: a refresh, a second student or the teacher's other laptop must
all see the same curves and be able to press Stop. So the run lives here, in one object per server; handlers read
`snapshot()` (a consistent copy taken under a lock) and never touch the thread. The library stays thread-free:
this thread and the inference worker (demo/inference.py) are the app's own. The app's job drives
`demo.train_process.fit_in_process`, so the run itself trains in a process of its own, beside the server's.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from cxr.train.events import Attention, Done, Evaluated, Event, Note, Started, Step
from cxr.train.loop import TrainConfig, fit

log = logging.getLogger(__name__)


class JobBusy(RuntimeError):
    """A second Start while a run is going."""


@dataclass(kw_only=True)
class Snapshot:
    status: str = "idle"  # idle | running | stopping | done | failed
    version: int = 0  # changes whenever the curves or the result change
    config: dict[str, Any] = field(default_factory=dict)
    started: dict[str, Any] = field(default_factory=dict)  # the Started event
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # Evaluated events, in order
    last_step: dict[str, Any] = field(default_factory=dict)  # the latest Step event
    attention: list[dict[str, Any]] = field(default_factory=list)  # Attention events, one per evaluation
    notes: list[str] = field(default_factory=list)
    done: dict[str, Any] = field(default_factory=dict)  # the Done event
    error: str = ""
    started_at: float = 0.0
    trained_at: float = 0.0  # when the Started event came: the set-up is over and the budget's evaluation clock starts
    ended_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ("running", "stopping")

    @property
    def steps_per_second(self) -> float:
        """The run's training pace so far (0 before its first step). Under a time budget the step count is only a
        cap, so anything that says "how long until step N" divides by this, not by the run's remaining steps."""
        if not self.last_step:
            return 0.0
        return self.last_step["train_images_per_sec"] / max(int(self.config.get("batch_size", 1)), 1)


class TrainingJob:
    def __init__(self, train: Callable[..., Iterator[Event]] = fit, on_end: Callable[[], Any] | None = None):
        self._train = train  # injectable so tests can drive a fake stream
        self._on_end = on_end  # called in the worker thread after each run (the app tidies the checkpoints folder)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = Snapshot()

    def start(self, cfg: TrainConfig) -> None:
        """Begin training in the background. Raises JobBusy if a run is going, ValueError for bad settings."""
        cfg.validate()
        with self._lock:
            if self._state.active:
                raise JobBusy("a training run is already going: watch it, or press Stop first")
            self._stop.clear()
            self._state = Snapshot(status="running", version=self._state.version + 1, config=asdict(cfg),
                                   started_at=time.time())
            self._thread = threading.Thread(target=self._run, args=(cfg,), name="cxr-train", daemon=True)
            self._thread.start()

    @property
    def active(self) -> bool:
        """Whether a run is going (cheaper than `snapshot().active`: asked before every batch of classifications)."""
        with self._lock:
            return self._state.active

    def stop(self) -> bool:
        """Ask the run to stop; it ends before its next optimisation step. False if nothing was running."""
        with self._lock:
            if self._state.status != "running":
                return False
            self._stop.set()
            self._state.status = "stopping"
            self._state.version += 1
            return True

    def snapshot(self) -> Snapshot:
        """A copy to read without the lock (lists are copied; their items are never changed once recorded)."""
        with self._lock:
            s = self._state
            return Snapshot(status=s.status, version=s.version, config=dict(s.config), started=dict(s.started),
                            evaluations=list(s.evaluations), last_step=dict(s.last_step), attention=list(s.attention),
                            notes=list(s.notes), done=dict(s.done), error=s.error, started_at=s.started_at,
                            trained_at=s.trained_at, ended_at=s.ended_at)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run's thread ends (for tests and shutdown). True if it ended."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _record(self, ev: Event) -> None:
        with self._lock:
            s = self._state
            if isinstance(ev, Step):
                s.last_step = ev.to_dict()
                return  # steps update the progress line, not the curves: no new version
            if isinstance(ev, Started):
                s.started, s.trained_at = ev.to_dict(), time.time()
                s.config = dict(ev.settings or s.config)  # as the run trains: a planned run's size, for instance
            elif isinstance(ev, Evaluated):
                s.evaluations.append(ev.to_dict())
            elif isinstance(ev, Attention):
                s.attention.append(ev.to_dict())
            elif isinstance(ev, Note):
                s.notes.append(ev.message)
            elif isinstance(ev, Done):
                s.done = ev.to_dict()
            s.version += 1

    def _run(self, cfg: TrainConfig) -> None:
        status, error = "done", ""
        try:
            for ev in self._train(cfg, stop=self._stop):
                self._record(ev)
        except ValueError as e:  # bad settings or data (UserError is one): a sentence written for people
            log.info("training ended: %s", e)
            status, error = "failed", str(e)
        except Exception:  # a bug or the machine (out of memory, disk full): the details go to the log only
            log.error("training failed:\n%s", traceback.format_exc())
            status, error = "failed", "training stopped unexpectedly; the details are in the server's log"
        with self._lock:
            self._state.status, self._state.error = status, error
            self._state.ended_at = time.time()
            self._state.version += 1
        if self._on_end is not None:
            try:
                self._on_end()
            except Exception:  # tidying must never take the server down
                log.exception("after-run tidy-up failed")
