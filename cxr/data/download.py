"""Fetching the COVID-19 Radiography Database from Kaggle with `kagglehub`, or saying plainly how to get it.

The database (about 21,000 PNGs, 800 MB) is public on Kaggle as `tawsifurrahman/covid19-radiography-database`.
kagglehub downloads it without an account for public datasets. Offline, `download_dataset` fails within seconds
with a message that says where to put the extracted folder instead, rather than hanging on retries.
"""

from __future__ import annotations

import socket
from pathlib import Path

from cxr.errors import UserError

KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE}"
DEFAULT_DEST = Path("data")
DATASET_FOLDER = "COVID-19_Radiography_Dataset"  # the folder the Kaggle archive unpacks into


class DownloadUnavailable(UserError):
    """The dataset could not be fetched (no network, no kagglehub, Kaggle refused)."""


def manual_instructions(dest: "str | Path" = DEFAULT_DEST) -> str:
    return (
        f"download the archive from {KAGGLE_URL} on a machine with internet, unzip it, and put the "
        f"{DATASET_FOLDER}/ folder (with COVID/, Normal/, 'Viral Pneumonia/' inside) at {Path(dest) / DATASET_FOLDER}, "
        "or pass its location with --data"
    )


def network_available(host: str = "www.kaggle.com", port: int = 443, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to `host`? Fails fast (DNS or connect) instead of waiting on retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_dataset(dest: "str | Path" = DEFAULT_DEST) -> Path:
    """Download the database into `dest` and return the folder holding the class folders."""
    dest = Path(dest)
    if not network_available():
        raise DownloadUnavailable(f"Kaggle cannot be reached from this machine (no network?): {manual_instructions(dest)}")
    try:
        import kagglehub
    except ImportError as e:
        raise DownloadUnavailable(f"kagglehub is not installed (pip install kagglehub), or {manual_instructions(dest)}") from e
    dest.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(dest)))
    except Exception as e:  # kagglehub raises HTTP, auth and IO errors of many types
        raise DownloadUnavailable(f"the Kaggle download failed ({type(e).__name__}: {e}); {manual_instructions(dest)}") from e
    inner = path / DATASET_FOLDER
    return inner if inner.is_dir() else path
