"""The app's one training job: `fit` driven in a single worker thread, its events kept for every visitor.

A browser tab is not the owner of a training run: a refresh, a second student or the teacher's other laptop must
all see the same curves and be able to press Stop. So the run lives here, in one object per server; handlers read
`snapshot()` (a consistent copy taken under a lock) and never touch the thread. The library stays thread-free:
this is the only place a thread is started.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from cxr.events import Done, Evaluated, Event, Note, Started, Step
from cxr.train import TrainConfig, fit

log = logging.getLogger(__name__)


class JobBusy(RuntimeError):
    """A second Start while a run is going."""


@dataclass
class Snapshot:
    status: str = "idle"  # idle | running | stopping | done | failed
    version: int = 0  # changes whenever the curves or the result change
    config: dict[str, Any] = field(default_factory=dict)
    started: dict[str, Any] = field(default_factory=dict)  # the Started event
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # Evaluated events, in order
    last_step: dict[str, Any] = field(default_factory=dict)  # the latest Step event
    notes: list[str] = field(default_factory=list)
    done: dict[str, Any] = field(default_factory=dict)  # the Done event
    error: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ("running", "stopping")


class TrainingJob:
    def __init__(self, train: Callable[..., Iterator[Event]] = fit):
        self._train = train  # injectable so tests can drive a fake stream
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
        with self._lock:
            s = self._state
            return Snapshot(s.status, s.version, dict(s.config), dict(s.started), list(s.evaluations),
                            dict(s.last_step), list(s.notes), dict(s.done), s.error, s.started_at, s.ended_at)

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
                s.started = ev.to_dict()
            elif isinstance(ev, Evaluated):
                s.evaluations.append(ev.to_dict())
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
        except Exception as e:  # the run failed; the server and the best checkpoint so far stay
            log.error("training failed:\n%s", traceback.format_exc())
            status = "failed"
            error = str(e) if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: training stopped unexpectedly"
        with self._lock:
            self._state.status, self._state.error = status, error
            self._state.ended_at = time.time()
            self._state.version += 1
