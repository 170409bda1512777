import json
import math
import shutil
import threading

import pytest
import torch

from cxr.train.checkpoint import load_checkpoint
from cxr.train.events import Attention, Done, Evaluated, Note, Started, Step
from cxr.data.lungs import DEFAULT_BOX
from cxr.train.loop import TrainConfig, fit, learning_rate
from tests.conftest import tiny_config


def _run(cfg, stop=None):
    return list(fit(cfg, stop))


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_checkpoint_names_the_images_its_run_held_out(synthetic_root, tmp_path):
    from cxr.data.index import index_dataset, split_dataset, split_names

    done = _run(tiny_config(synthetic_root, tmp_path / "m.pt"))[-1]
    index = index_dataset(synthetic_root)
    expected = split_names(index, split_dataset(index, test_per_class=3, val_per_class=3, seed=0))
    assert load_checkpoint(done.checkpoint).split == expected and len(expected["test"]) == 9


@pytest.mark.slow
def test_keep_last_keeps_and_tests_the_weights_of_the_last_evaluation(synthetic_root, tmp_path):
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=6, eval_every=2, keep="last"))
    evals, done = [e for e in events if isinstance(e, Evaluated)], events[-1]
    assert [e.step for e in evals] == [2, 4, 6] and all(e.is_best for e in evals)  # each replaces the one before
    assert done.best_step == 6 and done.best_val_accuracy == evals[-1].val_accuracy
    assert load_checkpoint(done.checkpoint).step == 6


@pytest.mark.slow
def test_a_finished_run_keeps_one_best_checkpoint_with_test_metrics_and_no_last_file(synthetic_root, tmp_path):
    done = _run(tiny_config(synthetic_root, tmp_path / "m.pt", save_last_every_s=0.0))[-1]
    best = load_checkpoint(done.checkpoint)
    assert best.metrics["test_accuracy"] == done.test_accuracy and best.classes == ("covid", "normal", "viral")
    assert best.config["lr"] == 1e-3 and best.synthetic
    assert best.step == done.best_step == best.metrics["best_step"]  # the step of the weights kept, not the last
    # -last was written during the run (save_last_every_s=0) and removed when it ended normally.
    assert done.last_checkpoint == "" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_finished_run_fits_its_temperature_on_the_validation_images(synthetic_root, tmp_path, monkeypatch):
    import cxr.train.loop

    scored, score = [], cxr.train.loop.score
    monkeypatch.setattr(cxr.train.loop, "score", lambda run, ids: scored.append(len(ids)) or score(run, ids))
    events = _run(tiny_config(synthetic_root, tmp_path / "t.pt", val_per_class=7))  # 21 images: enough to fit
    done = events[-1]
    # The kept weights' validation logits are reused: one pass per evaluation and the test, no extra one.
    assert len(scored) == sum(isinstance(e, Evaluated) for e in events) + 1
    kept = load_checkpoint(done.checkpoint)
    assert kept.calibration == done.calibration and kept.calibration["fitted_on"] == "validation"
    assert kept.calibration["images"] == 21 and not kept.calibration["note"]
    assert kept.temperature == kept.calibration["temperature"] > 0
    assert all(0 <= kept.calibration[k] <= 1 for k in ("ece_before", "ece_after"))


def test_a_run_with_few_validation_images_keeps_temperature_one_and_says_why(trained_checkpoint):
    kept = load_checkpoint(trained_checkpoint)  # 3 validation images per class
    assert kept.temperature == 1.0 and kept.calibration["images"] == 9 and "too few" in kept.calibration["note"]


@pytest.mark.slow
def test_the_best_checkpoint_carries_the_curves_and_the_attention_strip(synthetic_root, tmp_path):
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=6, eval_every=2))
    evals = [e for e in events if isinstance(e, Evaluated)]
    strips = [e for e in events if isinstance(e, Attention)]
    assert [a.step for a in strips] == [e.step for e in evals] == [2, 4, 6]  # one strip per evaluation
    assert all(a.classes == ["covid", "normal", "viral"] and len(a.maps) == 3 for a in strips)
    assert all(0 <= v <= 1 for a in strips for m in a.maps for row in m for v in row)
    metrics = load_checkpoint(tmp_path / "m.pt").metrics
    assert [h["step"] for h in metrics["history"]] == [2, 4, 6]
    assert [h["val_accuracy"] for h in metrics["history"]] == [e.val_accuracy for e in evals]
    assert metrics["attention"]["steps"] == [2, 4, 6] and metrics["attention"]["files"] == strips[0].files
    assert "maps" not in strips[0].to_dict(maps=False)


def test_a_diverging_run_stops_at_the_first_nan_loss_and_saves_no_nan_weights(synthetic_root, tmp_path, monkeypatch):
    import cxr.train.loop

    real = cxr.train.loop.train_step

    def diverging(model, *args, **kwargs):  # what a huge learning rate does: the weights and the loss blow up
        loss, correct = real(model, *args, **kwargs)
        if len(steps) == 2:
            with torch.no_grad():
                model.fc.weight.fill_(float("nan"))
            loss = float("nan")
        steps.append(loss)
        return loss, correct

    steps = []
    monkeypatch.setattr(cxr.train.loop, "train_step", diverging)
    # No timed -last save (a busy machine can take a minute to step 2): the file, if any, is the failure's.
    cfg = tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=40, eval_every=2, save_last_every_s=1e9)
    with pytest.raises(ValueError, match=r"^the loss became nan at step 3: lower the learning rate \(it is 0.001\)$"):
        _run(cfg)
    assert len(steps) == 3  # no step after the first NaN
    assert load_checkpoint(tmp_path / "m.pt").step == 2  # the finite best from step 2 is kept...
    assert not (tmp_path / "m-last.pt").exists()  # ...and the NaN weights are not saved for --resume


@pytest.mark.slow
def test_a_time_budget_evaluates_along_the_way_and_scores_the_weights_at_the_end(synthetic_root, tmp_path):
    # eval_every is far beyond the steps the budget allows: a curve needs evaluations by time as well.
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=100_000, eval_every=10_000, time_budget_s=3.0))
    done = events[-1]
    assert done.reason == "time_budget" and done.steps > 0
    steps = [e.step for e in events if isinstance(e, Evaluated)]
    assert len(steps) >= 2 and steps == sorted(set(steps))  # some along the way (every 3 / 8 s)...
    assert steps[-1] == done.steps  # ...and the weights at the end were scored
    assert load_checkpoint(done.checkpoint).metrics["test_accuracy"] == done.test_accuracy


def test_one_cycle_warms_up_then_anneals_to_zero():
    cfg = TrainConfig(lr=1e-3, schedule="onecycle", warmup=0.2)
    lrs = [learning_rate(cfg, p / 100) for p in range(101)]
    assert lrs[0] == pytest.approx(4e-5) and max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 20
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    assert learning_rate(TrainConfig(lr=1e-3), 0.7) == 1e-3  # constant: the recipe's


def test_fit_leaves_the_global_random_state_and_cudnn_setting_alone(synthetic_root, tmp_path):
    torch.manual_seed(123)
    before, cudnn = torch.random.get_rng_state(), torch.backends.cudnn.benchmark
    _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=2))
    assert torch.equal(torch.random.get_rng_state(), before) and torch.backends.cudnn.benchmark == cudnn


@pytest.mark.slow
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
    assert load_checkpoint(done.checkpoint).step == 3  # the weights of the evaluation at step 3, tested at stop


def test_a_run_stopped_before_its_first_evaluation_leaves_no_file(synthetic_root, tmp_path):
    flag = threading.Event()
    flag.set()
    done = _run(tiny_config(synthetic_root, tmp_path / "m.pt"), stop=flag)[-1]
    assert done.reason == "stopped" and done.steps == 0 and done.checkpoint == "" and done.test_accuracy is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_reaching_the_target_accuracy_stops_training(synthetic_root, tmp_path):
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=30, eval_every=1, target_accuracy=0.01))
    assert events[-1].reason == "target" and events[-1].steps == 1
    no_target = _run(tiny_config(synthetic_root, tmp_path / "n.pt", max_steps=5, eval_every=1, target_accuracy=0.0))
    assert no_target[-1].reason == "max_steps" and no_target[-1].steps == 5  # 0: every step runs (benchmarks)


@pytest.mark.slow
def test_decoding_in_worker_processes_trains_exactly_like_decoding_in_the_loop(synthetic_root, tmp_path):
    runs = [_run(tiny_config(synthetic_root, tmp_path / f"{w}.pt", max_steps=5, workers=w)) for w in (0, 2)]
    losses = [[e.train_loss for e in events if isinstance(e, Step)] for events in runs]
    assert len(losses[0]) == 5 and losses[0] == losses[1]  # the same images, in the same order, the same steps
    assert runs[0][-1].test_accuracy == runs[1][-1].test_accuracy


@pytest.mark.slow
def test_closing_the_stream_keeps_the_checkpoints(synthetic_root, tmp_path):
    cfg = tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=50, eval_every=2)
    stream = fit(cfg)
    for ev in stream:
        if isinstance(ev, Step) and ev.step == 5:
            break
    stream.close()
    assert load_checkpoint(tmp_path / "m.pt").step == 4  # best so far, from the evaluation at step 4
    assert load_checkpoint(tmp_path / "m-last.pt").step == 5


@pytest.mark.slow
def test_resume_continues_from_the_saved_step(synthetic_root, tmp_path):
    stream = fit(tiny_config(synthetic_root, tmp_path / "a.pt", max_steps=50))
    for ev in stream:
        if isinstance(ev, Step) and ev.step == 4:
            break
    stream.close()  # interrupted (as by Ctrl-C): the -last file is what --resume takes
    assert load_checkpoint(tmp_path / "a-last.pt").metrics["elapsed_s"] > 0
    events = _run(tiny_config(synthetic_root, tmp_path / "b.pt", max_steps=8, resume=str(tmp_path / "a-last.pt")))
    assert events[0].start_step == 4 and "resumed" in events[0].weights
    assert [e.step for e in events if isinstance(e, Step)] == [5, 6, 7, 8]
    history = load_checkpoint(events[-1].checkpoint).metrics["history"]
    assert [h["step"] for h in history] == [3, 6, 8]  # the curve goes on from the first run's evaluation


def test_a_checkpoint_records_the_precision_its_run_computed_in(trained_checkpoint):
    from types import SimpleNamespace

    from cxr.train.run import Run

    assert load_checkpoint(trained_checkpoint).metrics["precision"] == "float32"  # a CPU run without cpu_bf16
    assert Run.precision.fget(SimpleNamespace(amp_dtype=torch.bfloat16)) == "bfloat16 autocast"


def _killed_at_step_4(synthetic_root, out):
    stream = fit(tiny_config(synthetic_root, out, max_steps=50, eval_every=3))
    for ev in stream:
        if isinstance(ev, Step) and ev.step == 4:
            break
    stream.close()  # as by Ctrl-C: the -last file is the resume point, the best file holds step 3's evaluation
    return out.with_name(out.stem + "-last.pt")


@pytest.mark.slow
def test_a_resume_with_nothing_left_to_do_is_refused_and_keeps_its_file(synthetic_root, tmp_path):
    from cxr.errors import UserError

    last = _killed_at_step_4(synthetic_root, tmp_path / "a.pt")
    with pytest.raises(UserError, match="counts the time already trained"):
        _run(tiny_config(synthetic_root, tmp_path / "a.pt", resume=str(last), time_budget_s=0.001))
    with pytest.raises(UserError, match="is at step 4 and this run ends at step 4"):
        _run(tiny_config(synthetic_root, tmp_path / "a.pt", resume=str(last), max_steps=4))
    assert last.is_file()  # the resume point is not lost to a refused resume


@pytest.mark.slow
def test_a_resumed_keep_best_run_must_beat_the_best_its_first_part_saved(synthetic_root, tmp_path):
    from cxr.train.checkpoint import read_checkpoint_file

    last = _killed_at_step_4(synthetic_root, tmp_path / "a.pt")
    raw = read_checkpoint_file(tmp_path / "a.pt")
    raw["metrics"].update(val_accuracy=1.0, val_loss=0.0)  # a first part no later evaluation can beat
    torch.save(raw, tmp_path / "edited.pt")  # beside, then renamed: `raw` still maps the old file's bytes
    (tmp_path / "edited.pt").replace(tmp_path / "a.pt")
    done = _run(tiny_config(synthetic_root, tmp_path / "a.pt", resume=str(last), max_steps=9, eval_every=3))[-1]
    assert (done.best_step, done.best_val_accuracy) == (3, 1.0)  # its model is still the one kept and tested
    assert load_checkpoint(done.checkpoint).metrics["test_accuracy"] == done.test_accuracy and not last.exists()


@pytest.mark.slow
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
     ("target_accuracy", 1.5, "target accuracy"), ("freeze", "all", "freeze"), ("classes", ("covid",), "classes"),
     ("lr", 1e30, "learning rate"), ("seed", 2**70, "seed"), ("seed", 1.5, "seed must be a whole number"),
     ("weights", None, "starting weights"), ("epochs", float("nan"), "epochs"), ("hide_box", (0.5, 0.4, 0, 1), "hide box")],
)
def test_bad_settings_are_refused_with_the_setting_named(synthetic_root, tmp_path, field, value, words):
    with pytest.raises(ValueError, match=words):
        next(fit(tiny_config(synthetic_root, tmp_path / "m.pt", **{field: value})))


def test_config_round_trips_through_a_checkpoint_dict(synthetic_root, tmp_path):
    done = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=1))[-1]
    cfg = TrainConfig.from_dict(load_checkpoint(done.checkpoint).config)
    assert cfg == tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=1)


@pytest.mark.slow
def test_training_learns_the_synthetic_classes(synthetic_root, tmp_path):
    """The synthetic data must be learnable, or the app's offline demo would teach nothing."""
    torch.manual_seed(0)
    cfg = tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=60, eval_every=10, target_accuracy=0.99)
    done = _run(cfg)[-1]
    assert done.best_val_accuracy >= 0.66


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["box", "mask"])
def test_hidden_lungs_are_black_in_every_batch_fit_trains_and_evaluates_on(synthetic_root, tmp_path, monkeypatch, mode):
    import cxr.train.evaluate
    import cxr.train.loop
    from cxr.data.lungs import box_region
    from cxr.data.transforms import denormalize

    seen = {"train": [], "eval": []}
    real_step, real_eval = cxr.train.loop.train_step, cxr.train.loop.evaluate

    def spy_step(model, optimizer, x, y, *args, **kwargs):
        seen["train"].append(denormalize(x)[:, 0])
        return real_step(model, optimizer, x, y, *args, **kwargs)

    def spy_eval(model, batches, *args, **kwargs):
        batches = list(batches)
        seen["eval"] += [images[:, 0] for images, _ in batches]
        return real_eval(model, iter(batches), *args, **kwargs)

    monkeypatch.setattr(cxr.train.loop, "train_step", spy_step)
    monkeypatch.setattr(cxr.train.loop, "evaluate", spy_eval)
    done = list(fit(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=2, eval_every=2, hide_lungs=mode)))[-1]
    assert done.test_accuracy is not None and seen["train"] and seen["eval"]
    black = lambda x: (x.float() == 0).float().mean()  # noqa: E731
    if mode == "box":  # evaluation: exactly the box; training: the box moved with the augmented image, as big
        inside = box_region(DEFAULT_BOX, (64, 64))
        assert all((x[:, inside] == 0).all() for x in seen["eval"])
        assert all(black(x) > 0.45 for x in seen["train"])  # the box is 56 % of the image
    else:  # black where the masks are: a large share of each image, in training and in evaluation alike
        assert all(black(x) > 0.1 for x in seen["train"] + seen["eval"])
    assert load_checkpoint(done.checkpoint).config["hide_lungs"] == mode


def test_bfloat16_on_a_cpu_only_where_asked_and_where_the_processor_has_it(monkeypatch):
    import cxr.train.run
    from cxr.train.run import autocast_dtype

    cpu, cfg = torch.device("cpu"), TrainConfig(cpu_bf16=True)
    monkeypatch.setattr(cxr.train.run, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype(cfg, cpu) == torch.bfloat16 and autocast_dtype(TrainConfig(), cpu) is None
    monkeypatch.setattr(cxr.train.run, "cpu_has_native_bf16", lambda: False)  # emulated bf16 would be slower: float32
    assert autocast_dtype(cfg, cpu) is None
    assert autocast_dtype(TrainConfig(amp=True), torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype(TrainConfig(amp=False), torch.device("cuda")) is None


@pytest.mark.slow
def test_a_bfloat16_cpu_run_trains_and_evaluates(synthetic_root, tmp_path, monkeypatch):
    import cxr.train.run

    monkeypatch.setattr(cxr.train.run, "cpu_has_native_bf16", lambda: True)  # autocast runs (emulated) on any CPU
    events = _run(tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=3, cpu_bf16=True, device="cpu"))
    done = events[-1]
    assert done.steps == 3 and done.test_accuracy is not None
    assert all(math.isfinite(e.train_loss) for e in events if isinstance(e, Step))
