import threading

import pytest
import torch

import cxr.train.writer as writer_module
from cxr.train.checkpoint import load_checkpoint
from cxr.train.events import Done
from cxr.train.model import build_model
from cxr.train.loop import fit
from cxr.train.writer import CheckpointWriter, snapshot
from tests.conftest import tiny_config

META = dict(classes=("covid", "normal", "viral"), image_size=64, config={})


def _state(value: float) -> dict[str, torch.Tensor]:
    model, _ = build_model(3, "none")
    with torch.no_grad():
        model.fc.bias.fill_(value)
    return snapshot(model)[0]


def _gate(monkeypatch) -> tuple[threading.Event, threading.Event, list[int]]:
    """Hold the writer thread inside its first write until `release` is set; `started` says it is in there."""
    started, release, steps = threading.Event(), threading.Event(), []
    real = writer_module.save_checkpoint

    def slow(path, **kw):
        started.set()
        release.wait(10)
        steps.append(kw["step"])
        return real(path, **kw)

    monkeypatch.setattr(writer_module, "save_checkpoint", slow)
    return started, release, steps


def test_a_queued_checkpoint_is_on_disk_after_flush(tmp_path):
    with CheckpointWriter() as w:
        w.save(tmp_path / "a.pt", _state(0.5), metrics={"val_accuracy": 0.9}, step=7, **META)
        w.flush()
        ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt.step == 7 and ckpt.metrics["val_accuracy"] == 0.9
    assert torch.allclose(ckpt.model.fc.bias, torch.full((3,), 0.5))
    assert w.written == 1 and w.seconds > 0


def test_save_returns_while_the_disk_is_busy_and_waits_only_for_its_own_paths_previous_write(tmp_path, monkeypatch):
    started, release, steps = _gate(monkeypatch)
    w = CheckpointWriter()
    w.save(tmp_path / "a.pt", _state(1.0), metrics={}, step=1, **META)
    assert started.wait(10)  # the first write is under way and stuck
    w.save(tmp_path / "b.pt", _state(9.0), metrics={}, step=9, **META)  # another path: returns at once
    second = threading.Thread(target=w.save, args=(tmp_path / "a.pt", _state(2.0)), kwargs=dict(metrics={}, step=2, **META))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # the same path: waits until step 1 is on disk, so a kill loses at most the newest
    assert not (tmp_path / "a.pt").exists()
    release.set()
    second.join(10)
    w.flush()
    w.close()
    assert steps == [1, 9, 2] and w.written == 3
    assert load_checkpoint(tmp_path / "a.pt").step == 2 and load_checkpoint(tmp_path / "b.pt").step == 9


def test_a_failed_write_is_raised_by_flush_and_the_next_save(tmp_path, monkeypatch):
    def full(path, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_module, "save_checkpoint", full)
    w = CheckpointWriter()
    w.save(tmp_path / "a.pt", _state(0.0), metrics={}, step=1, **META)
    with pytest.raises(OSError, match="No space left"):
        w.flush()
    with pytest.raises(OSError, match="No space left"):
        w.save(tmp_path / "a.pt", _state(0.0), metrics={}, step=2, **META)
    w.close()  # does not raise: a failing run reports its own error


def test_a_closed_writer_takes_no_more(tmp_path):
    w = CheckpointWriter()
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.save(tmp_path / "a.pt", _state(0.0), metrics={}, step=1, **META)


def test_a_snapshot_does_not_follow_later_training(tmp_path):
    model, _ = build_model(3, "none")
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    state, opt_state = snapshot(model, optimizer)
    before = state["fc.weight"].clone(), opt_state["state"][0]["exp_avg"].clone()
    optimizer.step()  # changes the weights and the optimiser's moments in place
    assert not torch.equal(model.fc.weight, before[0])
    assert torch.equal(state["fc.weight"], before[0]) and torch.equal(opt_state["state"][0]["exp_avg"], before[1])


@pytest.mark.slow
def test_fit_writes_its_checkpoints_aside_and_leaves_no_thread(synthetic_root, tmp_path):
    events = list(fit(tiny_config(synthetic_root, tmp_path / "run.pt", max_steps=6, eval_every=2)))
    done = events[-1]
    assert isinstance(done, Done) and load_checkpoint(done.checkpoint).metrics["test_accuracy"] == done.test_accuracy
    assert done.seconds_writing > 0  # the evaluations' best weights went through the writer
    assert not [t for t in threading.enumerate() if t.name == "cxr-checkpoints"]


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_fails_the_run(synthetic_root, tmp_path, monkeypatch):
    def full(path, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_module, "save_checkpoint", full)
    with pytest.raises(OSError, match="No space left"):  # the second evaluation's save raises the first's error
        list(fit(tiny_config(synthetic_root, tmp_path / "run.pt", max_steps=6, eval_every=2)))
    assert not [t for t in threading.enumerate() if t.name == "cxr-checkpoints"]
    assert load_checkpoint(tmp_path / "run-last.pt").step == 4  # the weights are kept for --resume
    # The only save is the last evaluation's: its error comes after the loop, and the -last file is still kept.
    with pytest.raises(OSError, match="No space left"):
        list(fit(tiny_config(synthetic_root, tmp_path / "one.pt", max_steps=2, eval_every=2)))
    assert load_checkpoint(tmp_path / "one-last.pt").step == 2
