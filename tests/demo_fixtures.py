"""App fixtures: an AppContext over the synthetic dataset, the real server launched on a free port (in this process,
or as `python app.py` in its own), and checkpoints written with chosen metrics for the lists of models."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from demo.context import AppContext
from demo.settings import AppSettings

ROOT = Path(__file__).resolve().parent.parent


def make_context(data: Path, checkpoints: Path, checkpoint: Path | None = None) -> AppContext:
    checkpoints.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        shutil.copy(checkpoint, checkpoints / "tiny.pt")
    return AppContext(AppSettings(data, checkpoints, True, "**Synthetic data.** test banner"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`python app.py ARGS` in a process of its own on a free port, as on a Space: the process and its URL."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}/"


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Return as soon as `url` answers; fail at once if the app exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with status {proc.returncode} before answering at {url}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the app did not answer at {url} within {timeout:.0f} s")


def write_model(source: Path, dest: Path, test_accuracy: float | None, preset: str = "fast-cpu") -> Path:
    """A copy of checkpoint `source` at `dest` that says it was trained with `preset` and scored `test_accuracy`
    on its test set (None: an unfinished run), saved the way training saves (atomically, created now)."""
    from cxr.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(source)
    metrics = {k: v for k, v in ckpt.metrics.items() if k != "test_accuracy"}
    if test_accuracy is not None:
        metrics["test_accuracy"] = test_accuracy
    return save_checkpoint(dest, ckpt.model, ckpt.classes, ckpt.image_size, {**ckpt.config, "preset": preset}, metrics,
                           step=ckpt.step, synthetic=ckpt.synthetic)


@contextmanager
def serve(context: AppContext) -> Iterator[str]:
    """The whole app over `context`, served over HTTP as `python app.py` does; yields its URL, then stops any run
    and closes the server."""
    from demo.ui import build_app, launch_kwargs

    app = build_app(context)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs(context))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        context.job.stop()
        context.job.wait(60)
        app.close()


@pytest.fixture
def ctx(synthetic_root, trained_checkpoint, tmp_path) -> AppContext:
    return make_context(synthetic_root, tmp_path / "checkpoints", trained_checkpoint)


@pytest.fixture(scope="module")
def server(synthetic_root, trained_checkpoint, tmp_path_factory):
    """The whole app, served over HTTP like `python app.py` does. Yields (url, context)."""
    context = make_context(synthetic_root, tmp_path_factory.mktemp("server-ckpt"), trained_checkpoint)
    with serve(context) as url:
        yield url, context
