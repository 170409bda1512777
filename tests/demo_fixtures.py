"""App fixtures: an AppContext over the synthetic dataset, and the real server launched on a free port."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from demo.context import AppContext, AppSettings


def make_context(data: Path, checkpoints: Path, checkpoint: Path | None = None) -> AppContext:
    checkpoints.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        shutil.copy(checkpoint, checkpoints / "tiny.pt")
    return AppContext(AppSettings(data, checkpoints, True, "**Synthetic data.** test banner"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ctx(synthetic_root, trained_checkpoint, tmp_path) -> AppContext:
    return make_context(synthetic_root, tmp_path / "checkpoints", trained_checkpoint)


@pytest.fixture(scope="module")
def server(synthetic_root, trained_checkpoint, tmp_path_factory):
    """The whole app, served over HTTP like `python app.py` does. Yields (url, context)."""
    from demo.ui import build_app, launch_kwargs

    context = make_context(synthetic_root, tmp_path_factory.mktemp("server-ckpt"), trained_checkpoint)
    app = build_app(context)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/", context
    finally:
        context.job.stop()
        context.job.wait(60)
        app.close()
