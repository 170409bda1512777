"""The server's settings, fixed at start: where the data and checkpoints are, whether the data is synthetic (and the
banner that says so), the teacher key's digest, the checkpoints folder's cap and the starter run.

They come from `python app.py` flags, else the environment (CXR_*), else defaults. The dataset location is a server
setting, never a field a visitor can type into: on a public Space nobody may point the app at an arbitrary path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cxr.data.download import DATASET_FOLDER, DownloadUnavailable, download_dataset, manual_instructions
from cxr.data.index import SYNTHETIC_MARKER
from cxr.data.synthetic import make_synthetic

from .auth import MIN_KEY_LENGTH, digest_key
from .paths import default_checkpoint_dir

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
MAX_CHECKPOINT_MB = 2000  # default cap on the checkpoints folder: about 40 Fast runs; a free Space has 50 GB of disk


@dataclass(frozen=True)
class AppSettings:
    data_dir: Path
    checkpoints_dir: Path
    synthetic: bool
    banner: str  # markdown shown above the tabs; "" when real data is in use
    teacher_key_digest: bytes = field(default=b"", repr=False)  # sha256 of the teacher key; b"": no key, all may train
    max_checkpoint_bytes: int = MAX_CHECKPOINT_MB * 2**20
    starter: bool = False  # train a starter model on first start when the folder holds none

    @property
    def teacher_only(self) -> bool:
        return bool(self.teacher_key_digest)


def resolve_settings(data: str | None = None, download: bool = False, root: Path = ROOT, teacher_key: str | None = None,
                     starter: bool | None = None, max_checkpoint_mb: float | None = None) -> AppSettings:
    """The server's settings, from arguments, else the environment (CXR_*), else defaults. The dataset: --data /
    CXR_DATA, else data/COVID-19_Radiography_Dataset, else (after a download, if asked for and possible) the real
    database, else a synthetic set made once under data/synthetic."""
    checkpoints = default_checkpoint_dir(root=root)  # a Space's persistent /data when it has one (demo.paths)
    key = teacher_key if teacher_key is not None else os.environ.get("CXR_TEACHER_KEY", "")
    starter = starter if starter is not None else os.environ.get("CXR_STARTER", "1") not in ("0", "false", "")
    cap_mb = max_checkpoint_mb if max_checkpoint_mb is not None else float(os.environ.get("CXR_MAX_CHECKPOINT_MB", MAX_CHECKPOINT_MB))
    if key and len(key) < MIN_KEY_LENGTH:  # the page and API accept guesses as fast as they come: length is the lock
        log.warning("the teacher key has %d characters; on a public Space use %d or more (e.g. python -c \"import "
                    "secrets; print(secrets.token_urlsafe(16))\"): anyone may try keys as fast as the server answers",
                    len(key), MIN_KEY_LENGTH)
    extra = dict(teacher_key_digest=digest_key(key), starter=starter, max_checkpoint_bytes=int(cap_mb * 2**20))
    return _with_data(data, download, root, checkpoints, extra)


def _with_data(data: str | None, download: bool, root: Path, checkpoints: Path, extra: dict) -> AppSettings:
    data = data or os.environ.get("CXR_DATA")
    download = download or os.environ.get("CXR_DOWNLOAD", "") not in ("", "0", "false")
    if data:
        path = Path(data).expanduser()
        synthetic = (path / SYNTHETIC_MARKER).exists()
        return AppSettings(path, checkpoints, synthetic, _synthetic_banner("") if synthetic else "", **extra)
    default = root / "data" / DATASET_FOLDER
    if default.is_dir():
        return AppSettings(default, checkpoints, False, "", **extra)
    why = ""
    if download:
        try:
            log.info("downloading the COVID-19 Radiography Database (about 800 MB) ...")
            return AppSettings(download_dataset(root / "data"), checkpoints, False, "", **extra)
        except DownloadUnavailable as e:
            log.warning("download failed: %s", e)
            why = f"The download of the real database failed ({str(e).split(':')[0]}). "
    synthetic = root / "data" / "synthetic"
    if not (synthetic / SYNTHETIC_MARKER).exists():
        log.info("no dataset found: drawing a synthetic one at %s", synthetic)
        make_synthetic(synthetic, per_class=80, size=256, classes=("covid", "normal", "viral"))
    return AppSettings(synthetic, checkpoints, True, _synthetic_banner(why), **extra)


def _synthetic_banner(why: str) -> str:
    return (
        f"**Synthetic data.** {why}These pictures are drawn by a program to look a little like chest X-rays; "
        "they are not medical images, and a model trained on them says nothing about real ones. "
        f"To use the real COVID-19 Radiography Database: {manual_instructions()} — or start the app with "
        "`--download` (or `CXR_DOWNLOAD=1` on a Space) where the internet is reachable."
    )
