"""App fixtures: an AppContext over the synthetic dataset, and the real server launched on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from demo.context import AppContext, AppSettings

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
