import json
import shutil
import threading

import pytest
import torch

from cxr.checkpoint import load_checkpoint
from cxr.events import Done, Evaluated, Note, Started, Step
from cxr.train import TrainConfig, fit
from tests.conftest import tiny_config


def _run(cfg, stop=None):
    return list(fit(cfg, stop))


def test_fit_emits_start_steps_evaluations_and_done(synthetic_root, tmp_path):
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=6, eval_every=3))
    assert isinstance(events[0], Started)
    assert events[0].split == {"train": 18, "val": 9, "test": 9} and events[0].synthetic
    steps = [e for e in events if isinstance(e, Step)]
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in evals] == [3, 6]
    for e in steps + evals:
        assert e.train_images_per_sec > 0 and e.eta_s >= 0 and e.train_loss > 0 and e.total_steps == 6
    assert all(0 <= e.val_accuracy <= 1 and e.val_loss > 0 for e in evals)
    done = events[-1]
    assert isinstance(done, Done) and done.reason == "max_steps" and done.steps == 6
    assert 0 <= done.test_accuracy <= 1 and done.test_report["count"] == 9
    assert done.seconds_eval > 0 and done.seconds_data > 0 and done.peak_memory_mb > 0
    json.dumps(done.to_dict())  # every event serialises for --json


def test_best_and_last_checkpoints_are_written_and_best_carries_test_metrics(synthetic_root, tmp_path):
    done = _run(tiny_config(synthetic_root, tmp_path / "m.pt"))[-1]
    best = load_checkpoint(done.checkpoint)
    assert best.metrics["test_accuracy"] == done.test_accuracy and best.classes == ("covid", "normal", "viral")
    assert best.config["lr"] == 1e-3 and best.synthetic
    last = load_checkpoint(done.last_checkpoint)
    assert last.step == 6 and last.optimizer is not None


def test_training_is_reproducible_with_a_seed(synthetic_root, tmp_path):
    losses = []
    for run in ("a", "b"):
        events = _run(tiny_config(synthetic_root, tmp_path / f"{run}.pt", max_steps=4))
        losses.append([e.train_loss for e in events if isinstance(e, Step)])
    assert losses[0] == losses[1]
    other = _run(tiny_config(synthetic_root, tmp_path / "c.pt", max_steps=4, seed=1))
    assert [e.train_loss for e in other if isinstance(e, Step)] != losses[0]


class _StopAfter:
    """A stop flag that turns on after n checks, like a Stop button pressed mid-run."""

    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def test_stop_flag_ends_training_within_one_step(synthetic_root, tmp_path):
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=50), stop=_StopAfter(4))
    assert max(e.step for e in events if isinstance(e, Step)) == 4
    done = events[-1]
    assert done.reason == "stopped" and done.steps == 4
    assert load_checkpoint(done.checkpoint).step == 4  # scored at stop, so there is a best checkpoint


def test_threading_event_works_as_stop_flag(synthetic_root, tmp_path):
    flag = threading.Event()
    flag.set()
    done = _run(tiny_config(synthetic_root, tmp_path / "m.pt"), stop=flag)[-1]
    assert done.reason == "stopped" and done.steps == 0


def test_reaching_the_target_accuracy_stops_training(synthetic_root, tmp_path):
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=30, eval_every=1, target_accuracy=0.01))
    assert events[-1].reason == "target" and events[-1].steps == 1


def test_closing_the_stream_keeps_the_checkpoints(synthetic_root, tmp_path):
    cfg = tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=50, eval_every=2)
    stream = fit(cfg)
    for ev in stream:
        if isinstance(ev, Step) and ev.step == 5:
            break
    stream.close()
    assert load_checkpoint(tmp_path / "m.pt").step == 4  # best so far, from the evaluation at step 4
    assert load_checkpoint(tmp_path / "m-last.pt").step == 5


def test_resume_continues_from_the_saved_step(synthetic_root, tmp_path):
    first = _run(tiny_config(synthetic_root, tmp_path / "a.pt", max_steps=4))[-1]
    events = _run(tiny_config(synthetic_root, tmp_path / "b.pt", max_steps=8, resume=first.last_checkpoint))
    assert events[0].start_step == 4 and "resumed" in events[0].weights
    assert [e.step for e in events if isinstance(e, Step)] == [5, 6, 7, 8]


def test_unreadable_images_are_skipped_and_reported(synthetic_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    for i in (1, 2):
        (data / "Normal" / "images" / f"Normal-{i}.png").write_bytes(b"broken")
    events = _run(tiny_config(data, tmp_path / "m.pt", max_steps=6, eval_every=2))
    done = events[-1]
    assert sorted(done.skipped_files) == ["Normal-1.png", "Normal-2.png"]  # every split was read by the end
    assert done.test_report["count"] + sum(1 for _ in done.skipped_files) >= 9 - 2


def test_freeze_with_random_weights_is_ignored_with_a_note(synthetic_root, tmp_path):
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=1, freeze="layer2"))
    assert any(isinstance(e, Note) and "freeze" in e.message for e in events)
    assert events[0].trainable_params == 11_178_051


@pytest.mark.parametrize(
    "field, value, words",
    [("batch_size", 0, "batch size"), ("lr", 0.0, "learning rate"), ("image_size", 8, "image size"),
     ("target_accuracy", 1.5, "target accuracy"), ("freeze", "all", "freeze"), ("classes", ("covid",), "classes")],
)
def test_bad_settings_are_refused_with_the_setting_named(synthetic_root, tmp_path, field, value, words):
    with pytest.raises(ValueError, match=words):
        next(fit(tiny_config(synthetic_root, tmp_path / "m.pt", **{field: value})))


def test_config_round_trips_through_a_checkpoint_dict(synthetic_root, tmp_path):
    done = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=1))[-1]
    cfg = TrainConfig.from_dict(load_checkpoint(done.checkpoint).config)
    assert cfg == tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=1)


def test_training_learns_the_synthetic_classes(synthetic_root, tmp_path):
    """The synthetic data must be learnable, or the app's offline demo would teach nothing."""
    torch.manual_seed(0)
    cfg = tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=60, eval_every=10, target_accuracy=0.99)
    done = _run(cfg)[-1]
    assert done.best_val_accuracy >= 0.66
