"""fit in its own process: the same events as in-process, Stop crosses over, failures become sentences."""

from __future__ import annotations

import threading

import pytest

from cxr.train.events import Done, Started, Step
from demo.train_process import fit_in_process
from tests.conftest import tiny_config


@pytest.mark.slow
def test_the_child_process_streams_the_same_kinds_of_event(synthetic_root, tmp_path):
    events = list(fit_in_process(tiny_config(synthetic_root, tmp_path / "p.pt", max_steps=3)))
    assert isinstance(events[0], Started) and isinstance(events[-1], Done)
    assert [e.step for e in events if isinstance(e, Step)] == [1, 2, 3]
    assert (tmp_path / "p.pt").exists()


@pytest.mark.slow
def test_stop_reaches_the_child(synthetic_root, tmp_path):
    stop = threading.Event()
    steps = 0
    for ev in fit_in_process(tiny_config(synthetic_root, tmp_path / "s.pt", max_steps=10_000), stop=stop):
        if isinstance(ev, Step):
            steps += 1
            stop.set()
        if isinstance(ev, Done):
            assert ev.reason == "stopped"
    assert 1 <= steps < 50


@pytest.mark.slow
def test_bad_settings_come_back_as_the_librarys_sentence(tmp_path):
    cfg = tiny_config(tmp_path / "no-such-folder", tmp_path / "x.pt")
    with pytest.raises(ValueError, match="no-such-folder"):
        list(fit_in_process(cfg))


@pytest.mark.slow
def test_a_run_ends_when_its_server_is_killed(synthetic_root, tmp_path):
    """A server killed outright must not leave its training process behind (it would train into a queue no one
    reads, on the cores the next server needs)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, time; from demo.train_process import fit_in_process; from tests.conftest import tiny_config; "
            "from pathlib import Path; "
            f"it = fit_in_process(tiny_config(Path({str(synthetic_root)!r}), Path({str(tmp_path / 'k.pt')!r}), "
            "max_steps=100000)); next(it); print('started', flush=True); time.sleep(600)")
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert server.stdout.readline().strip() == "started"
    children = [int(c) for c in open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()]
    assert children
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    deadline = time.time() + 30
    while time.time() < deadline and any(os.path.exists(f"/proc/{c}") and "Z" not in _state(c) for c in children):
        time.sleep(0.5)
    assert not any(os.path.exists(f"/proc/{c}") and "Z" not in _state(c) for c in children)


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
