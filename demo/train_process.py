"""`fit` in a process of its own, for the app: the same event stream, with its own threads and a lower priority.

In the server's process a run shares the interpreter and torch's thread pools with every request a class sends:
thirty students classifying at once slowed a run to a third of its pace and made each request wait seconds. In a
child process the run has its own intra-op threads (one per core), and runs at a lower CPU priority (`NICENESS`),
so a student's request takes a core for the few tens of milliseconds it needs and then gives it back. The events
cross back through a queue as they happen; Stop crosses the other way as a process-shared flag. A child that dies
(killed, out of memory) ends the stream with an error, never a hang.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from typing import Any, Iterator

from cxr.train.config import TrainConfig
from cxr.train.events import Event, StopFlag

NICENESS = 5  # the run yields to the server's requests, not the other way round (about 3x less weight when both run)
_END = "end"
_CHILDREN: set = set()  # running training processes, ended when the server exits


def fit_in_process(cfg: TrainConfig, stop: StopFlag | None = None) -> Iterator[Event]:
    """Run `cxr.train.loop.fit(cfg)` in a child process and yield its events here. `stop.is_set()` is passed on
    to the child, which stops before its next step. Raises ValueError with the library's sentence for bad settings
    or data, RuntimeError when the child fails or dies."""
    ctx = mp.get_context("spawn")  # no fork: the server's threads and torch's state must not be copied
    events: Any = ctx.Queue()
    child_stop = ctx.Event()
    # Not a daemon: the GPU preset's decoding workers are the child's own children, which a daemon may not have.
    child = ctx.Process(target=_child, args=(cfg, events, child_stop), name="cxr-train")
    child.start()
    _CHILDREN.add(child)
    try:
        while True:
            if stop is not None and stop.is_set():
                child_stop.set()
            try:
                kind, payload = events.get(timeout=0.2)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the training process ended unexpectedly (exit code {child.exitcode})") from None
                continue
            if kind == "event":
                yield payload
            elif kind == "value_error":
                raise ValueError(payload)
            elif kind == "error":
                raise RuntimeError(f"training failed in its process:\n{payload}")
            else:  # _END
                return
    finally:
        child_stop.set()
        child.join(30)
        if child.is_alive():  # the consumer stopped pulling and the child does not stop: end it
            child.terminate()
            child.join(5)
        _CHILDREN.discard(child)


@atexit.register
def _end_children() -> None:
    """A server shutting down ends its run rather than wait minutes for it (runs before multiprocessing joins)."""
    for child in list(_CHILDREN):
        child.terminate()


def _child(cfg: TrainConfig, events: Any, stop: Any) -> None:
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), name="cxr-parent-watch", daemon=True).start()
    try:
        from cxr.train.loop import fit

        for ev in fit(cfg, stop=stop):
            events.put(("event", ev))
        events.put((_END, None))
    except ValueError as e:  # UserError is one: a sentence for people
        events.put(("value_error", str(e)))
    except BaseException:
        events.put(("error", traceback.format_exc()))


def _end_with_parent(parent: int) -> None:
    """A server killed outright (SIGKILL, or SIGTERM, which skips `atexit`) leaves its run behind, training into a
    queue nobody reads: the child ends itself once its parent is gone (it is then adopted by another process)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)
