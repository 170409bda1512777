"""What an anonymous visitor can make the server keep: files per upload request, and the upload cache's size.

Gradio accepts up to 1000 files in one upload request and keeps uploads for as long as `delete_cache` says. A page
of this app never sends more than one file at a time, so `limit_files_per_request` lowers Gradio's multipart
limit (a request with more files is refused with HTTP 400 before any file is stored); Gradio has no setting for it,
so this wraps its parser's constructor, once. `UploadJanitor` keeps the upload folder under a size cap, oldest
files first, every few seconds, in one daemon thread per server. Classify also deletes each X-ray once read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from gradio import route_utils

log = logging.getLogger(__name__)
MAX_FILES_PER_REQUEST = 4
MAX_UPLOAD_CACHE_MB = 1024


def limit_files_per_request(limit: int = MAX_FILES_PER_REQUEST) -> None:
    """Make Gradio's upload parser refuse requests carrying more than `limit` files."""
    parser = route_utils.GradioMultiPartParser
    original = getattr(parser.__init__, "_cxr_original", parser.__init__)

    def __init__(self, *args, max_files: float = 1000, **kwargs):
        original(self, *args, max_files=min(max_files, limit), **kwargs)

    __init__._cxr_original = original
    parser.__init__ = __init__


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


def trim_folder(folder: Path, max_bytes: int, min_age_s: float = 120.0) -> list[Path]:
    """Delete the oldest files under `folder` until it holds at most `max_bytes` (files younger than `min_age_s`
    are left: a request may still be waiting in the queue to read them). Returns what was deleted."""
    files = folder_files(folder)
    total, removed, now = sum(size for _, size, _ in files), [], time.time()
    for mtime, size, path in files:
        if total <= max_bytes:
            break
        if now - mtime < min_age_s:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


class UploadJanitor:
    """Keeps the upload folder under its cap in the background."""

    def __init__(self, folder: str | Path, max_bytes: int = MAX_UPLOAD_CACHE_MB * 2**20, every_s: float = 10.0):
        self.folder, self.max_bytes, self.every_s = Path(folder), max_bytes, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cxr-upload-janitor", daemon=True)

    def start(self) -> "UploadJanitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                removed = trim_folder(self.folder, self.max_bytes)
                if removed:
                    log.info("upload cache over %d MB: removed %d old files", self.max_bytes // 2**20, len(removed))
            except OSError:
                log.exception("could not trim the upload cache")
