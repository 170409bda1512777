"""Where the app keeps its checkpoints by default, as one small rule without gradio, so a test can check it.

A Hugging Face Space's own disk is wiped at every restart; a Space with persistent storage mounts a disk that
survives at `/data`. So on a Space (`SPACE_ID` is set there) whose `/data` is a writable folder, models default to
`/data/checkpoints` and survive a restart; elsewhere they stay in the project's `checkpoints/` folder. `CXR_CHECKPOINTS`
overrides both. `demo.context` reads the result when it resolves the server's settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project folder, where `checkpoints/` sits
SPACE_STORAGE = Path("/data")  # where a Space mounts its persistent storage (Hugging Face's fixed path)


def default_checkpoint_dir(env: Mapping[str, str] | None = None, root: Path = ROOT,
                           storage: Path = SPACE_STORAGE) -> Path:
    """The checkpoints folder: `$CXR_CHECKPOINTS` if set (and not empty), else `storage/checkpoints` on a Space whose
    persistent storage is mounted and writable, else `root/checkpoints`. `env` defaults to the process environment."""
    env = os.environ if env is None else env
    if env.get("CXR_CHECKPOINTS"):  # an empty value (a Space variable left blank) means "not set"
        return Path(env["CXR_CHECKPOINTS"])
    # Only on a Space: a /data folder on a laptop or a CI machine is someone else's.
    if env.get("SPACE_ID") and storage.is_dir() and os.access(storage, os.W_OK | os.X_OK):
        return storage / "checkpoints"
    return root / "checkpoints"
