"""How much memory image decodes running at once may hold, and giving it back to the system afterwards.

A server decodes each visitor's upload in its own thread: a class dropping big scans together would multiply what
one decode needs. `cxr.data.images` estimates each decode's peak bytes before decoding and reserves them here
(`DECODES.reserve`): decodes wait, first come first served, until theirs fit under DECODE_BUDGET. A single image
larger than the whole budget still decodes, alone. After a run of decodes of which one was big, `settle` hands the
freed memory back to the system (glibc's malloc_trim), or the server would stay hundreds of MB larger. A server
marks each request that may decode (`DECODES.working()`): then the memory goes back once the burst is over, after
the last request's model work and drawing too, and `limit_arenas` keeps glibc from giving each of its threads a heap
of its own that it would keep.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from typing import Iterator

# Bytes that decodes running at once may hold. A class uploading big files together would otherwise multiply
# what one decode needs; one image larger than this still decodes, but alone.
DECODE_BUDGET = 1_000_000_000
# A decode at least this big gives its freed memory back to the system when it is the last one running (a
# 5-megapixel PNG and up: what glibc would otherwise keep; malloc_trim takes milliseconds, the decode far more).
TRIM_BYTES = 16_000_000
# After the last request of a burst, wait this long before trimming: the answer is still being drawn and encoded.
TRIM_DELAY_S = 2.0
M_ARENA_MAX = -8  # glibc's mallopt parameter: how many heaps (arenas) threads may spread over


class DecodeBudget:
    """Decodes reserve their estimated bytes here and wait, in arrival order, until they fit under the limit."""

    def __init__(self, limit: int):
        self.limit, self.used, self.big = limit, 0, False
        self.requests = 0  # requests inside `working()`: while any runs, the trim waits for the end of the burst
        self._turn = self._next = 0  # tickets: first come, first served, so a big image is not starved
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            self._cond.wait_for(lambda: self._turn == ticket and (self.used == 0 or self.used + nbytes <= self.limit))
            self._turn, self.used = self._turn + 1, self.used + nbytes
            self.big = self.big or nbytes >= TRIM_BYTES
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()

    def settle(self) -> None:
        """After the last of a run of decodes, one of them big, hand the memory they freed back to the system.

        glibc keeps freed blocks under its mmap threshold (which grows to 32 MB) in per-thread arenas, so a
        class's big uploads would leave the server hundreds of MB larger long after the last request."""
        with self._cond:
            if self.used or self.requests or not self.big:
                return
            self.big = False
        if _malloc_trim is not None:
            _malloc_trim(0)

    @contextmanager
    def working(self) -> Iterator[None]:
        """One request that may decode an image and then work on it: the trim waits until no request is running,
        and then TRIM_DELAY_S more, so what the last answer's drawing freed goes back too."""
        with self._cond:
            self.requests += 1
        try:
            yield
        finally:
            with self._cond:
                self.requests -= 1
                last = self.requests == 0 and self.big
            if last:
                timer = threading.Timer(TRIM_DELAY_S, self.settle)
                timer.daemon = True
                timer.start()


def _find_malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only; elsewhere there is nothing to do
    except (AttributeError, OSError, TypeError):
        return None


def limit_arenas(count: int = 2) -> bool:
    """Let the threads started from now on share `count` glibc heaps (mallopt M_ARENA_MAX) instead of one per thread
    up to eight per core: a server's many request threads would each keep the memory a big upload freed. Measured by
    `python -m benchmarks.memprobe --skip-decode --uploads 30` (docs/benchmarks.md). Returns False where it does not
    apply (not glibc)."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, int(count)))
    except (AttributeError, OSError, TypeError):
        return False


_malloc_trim = _find_malloc_trim()
DECODES = DecodeBudget(DECODE_BUDGET)  # shared by every decode in the process
