"""What an anonymous visitor can make the server keep: files per upload request, and the upload cache's size.

Gradio accepts up to 1000 files in one upload request and keeps uploads for as long as `delete_cache` says. A page
of this app never sends more than one file at a time, so `limit_files_per_request` lowers Gradio's multipart
limit (a request with more files is refused with HTTP 400 before any file is stored); Gradio has no setting for it,
so this wraps its parser's constructor, once. `refuse_links` stops file inputs given as URLs (which Gradio would
download with no size limit). `UploadJanitor` keeps the upload folder under a size cap every few seconds, in one
daemon thread per server: it deletes the oldest files no page needs (never the images the page was built with,
which every visitor's page links to), and while the folder stays over the cap the parser refuses new uploads, so
a flood of 64 MB posts cannot fill the disk between its rounds. Classify has each X-ray deleted a minute after it
is read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection

from gradio import processing_utils, route_utils
from starlette.formparsers import MultiPartException

if TYPE_CHECKING:
    from .context import AppContext

log = logging.getLogger(__name__)
MAX_FILES_PER_REQUEST = 4
MAX_UPLOAD_CACHE_MB = 1024


def limit_files_per_request(limit: int = MAX_FILES_PER_REQUEST, refuse: Callable[[], str] | None = None) -> None:
    """Make Gradio's upload parser refuse requests carrying more than `limit` files, and every request while
    `refuse()` returns a sentence (HTTP 400 with that sentence, before anything is stored)."""
    parser = route_utils.GradioMultiPartParser
    original = getattr(parser.__init__, "_cxr_original", parser.__init__)

    def __init__(self, *args, max_files: float = 1000, **kwargs):
        why = refuse() if refuse is not None else ""
        if why:
            raise MultiPartException(why)
        original(self, *args, max_files=min(max_files, limit), **kwargs)

    __init__._cxr_original = original
    parser.__init__ = __init__


NO_LINKS = "this server does not fetch files from links: upload the file itself"


def refuse_links() -> None:
    """Make Gradio refuse a file input given as a URL instead of downloading it. A page of this app only uploads
    files; a forged request naming a URL would have the server download it into the upload folder with no size
    limit, past the upload route's checks. Gradio has no setting for it, so this replaces its download function."""
    async def refuse(url: str, cache_dir: str) -> str:
        raise ValueError(NO_LINKS)

    processing_utils.async_ssrf_protected_download = refuse


def folder_files(folder: Path) -> list[tuple[float, int, Path]]:
    """(modification time, size, path) of every file under `folder`, oldest first."""
    found = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                continue
            found.append((st.st_mtime, st.st_size, path))
    return sorted(found)


def trim_folder(folder: Path, max_bytes: int, min_age_s: float = 120.0,
                removable: Callable[[Path], bool] = lambda path: True) -> tuple[list[Path], int]:
    """Delete the oldest `removable` files under `folder` until it holds at most `max_bytes` (files younger than
    `min_age_s` are left: a request may still be waiting in the queue to read them). Returns what was deleted and
    the bytes left."""
    files = folder_files(folder)
    total, removed, now = sum(size for _, size, _ in files), [], time.time()
    for mtime, size, path in files:
        if total <= max_bytes:
            break
        if now - mtime < min_age_s or not removable(path):
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed, total


FULL = ("The server's upload space is full right now; try again in a few minutes (uploads are deleted once "
        "classified, and old ones are cleared regularly).")
FORGET_AFTER_S = 60.0  # a classified upload waits this long before deletion: classmates may have sent the same file


class UploadJanitor:
    """Keeps the upload folder under its cap in the background.

    Over the cap it deletes the oldest files a page does not need (anything but `protected()`: the images and files
    the page was built with, which every visitor's page links to), at least two minutes old; that includes
    leftovers of earlier server processes, which no record of this one knows. While the folder stays over the cap
    (a flood younger than two minutes), `refusal()` is the sentence new uploads get. `forget(path)` deletes a
    classified upload a minute later: Gradio stores identical uploads once, so the same X-ray sent by two students
    is one file, and the second one's request may still be waiting to read it."""

    def __init__(self, folder: str | Path, protected: Callable[[], Collection[str]] = frozenset,
                 max_bytes: int = MAX_UPLOAD_CACHE_MB * 2**20, every_s: float = 2.0):
        self.folder, self.protected, self.max_bytes, self.every_s = Path(folder), protected, max_bytes, every_s
        self.full = False
        self._due: dict[str, float] = {}  # path -> when to delete it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cxr-upload-janitor", daemon=True)

    def start(self) -> "UploadJanitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def refusal(self) -> str:
        return FULL if self.full else ""

    def forget(self, path: str, after_s: float = FORGET_AFTER_S) -> None:
        with self._lock:
            self._due[path] = time.time() + after_s

    def trim(self, now: float | None = None) -> list[Path]:
        """One round: delete the uploads whose time has come, then the oldest unneeded files over the cap, then
        note whether the folder is still over it."""
        now = time.time() if now is None else now
        with self._lock:
            due = [p for p, when in self._due.items() if when <= now]
            for p in due:
                del self._due[p]
        for p in due:
            Path(p).unlink(missing_ok=True)
        keep: set[str] | None = None  # listed only when the folder is over the cap (most rounds it is not)

        def removable(path: Path) -> bool:
            nonlocal keep
            keep = set(self.protected()) if keep is None else keep
            return str(path) not in keep

        removed, left = trim_folder(self.folder, self.max_bytes, removable=removable)
        if removed:
            log.info("upload cache over %d MB: removed %d old files", self.max_bytes // 2**20, len(removed))
        self.full = left > self.max_bytes
        return [Path(p) for p in due] + removed

    def _run(self) -> None:
        while True:
            try:
                self.trim()
            except OSError:
                log.exception("could not trim the upload cache")
            if self._stop.wait(self.every_s):
                return


def forget_upload(ctx: "AppContext", file: str | None) -> None:
    """Have an uploaded file deleted once it has been read: nobody's upload waits in the server's cache. Only a
    file a visitor uploaded (Gradio records each one): a request that names one of the server's own cached images
    (the galleries every page shows) must not be able to delete it. The janitor deletes it a minute later, since
    the same X-ray sent by two students is one file; with no janitor (tests, scripts), at once."""
    if not file or file not in ctx.uploads:
        return
    if ctx.janitor is not None:
        ctx.janitor.forget(file)
    else:
        Path(file).unlink(missing_ok=True)
