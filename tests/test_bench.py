"""The benchmark's parts on tiny inputs: FLOP counting, the peak, steady-state rate, percentiles, one short run of
the plain recipe and of a preset, latency, and the table built from them. The figures themselves come from
`python -m cxr bench` (see README), never from a timed test."""

import json
import math

import pytest
import torch

from cxr.bench import compute, speedrun, throughput as bench
from cxr.train.presets import apply_preset
from cxr.data.synthetic import make_synthetic
from cxr.data.transforms import AugmentConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    # The plain recipe splits as the course does (30 test and 30 validation images per class), so it needs more
    # images than the shared tiny set has.
    return str(make_synthetic(tmp_path_factory.mktemp("bench"), per_class=64, size=64, seed=1,
                              classes=("covid", "normal", "viral")))


def test_training_flops_match_resnet18s_published_cost():
    # 1.82 GMAC forward at 224 px; a training step costs about three forwards (backward is two).
    flops = compute.train_flops_per_image(224)
    assert flops == pytest.approx(3 * 2 * 1.82e9, rel=0.05)
    assert compute.train_flops_per_image(128) == pytest.approx(flops * (128 / 224) ** 2, rel=0.05)
    assert compute.train_flops_per_image(224, "layer1") < 0.9 * flops  # frozen layers need no weight gradients


def test_matmul_peak_is_the_flops_of_the_fastest_repeat_and_restores_tf32(monkeypatch):
    ticks = iter([0.0, 0.5, 10.0, 10.25, 20.0, 20.4])  # three repeats: 0.5 s, 0.25 s, 0.4 s
    monkeypatch.setattr(compute.time, "perf_counter", lambda: next(ticks))
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        assert compute.matmul_peak(CPU, n=64, reps=3) == pytest.approx(2 * 64**3 / 0.25 / 1e9)
        assert torch.backends.cuda.matmul.allow_tf32 is True  # the caller's setting is given back
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_steady_rate_ignores_the_first_half_of_a_run():
    marks = [(0.0, 0), (10.0, 10), (11.0, 20), (12.0, 30), (13.0, 40)]  # a slow first step, then 10 images/s
    assert bench._steady(marks) == pytest.approx(10.0)
    assert bench._steady([(0.0, 0), (2.0, 10)]) == pytest.approx(5.0)
    assert math.isnan(bench._steady([(1.0, 16)]))  # one step: no rate, and not a misleading 0


def test_percentiles():
    from cxr.bench.measure import p50_p95

    assert p50_p95([float(v) for v in range(1, 101)]) == {"p50_ms": 50.5, "p95_ms": 96.0}
    assert p50_p95([3.0]) == {"p50_ms": 3.0, "p95_ms": 3.0}


@pytest.mark.slow
@pytest.mark.parametrize("kind, images", [("plain", 12), ("fast-cpu", 64)])  # 2 steps each
def test_one_short_run_reports_what_the_table_needs(bench_data, kind, images):
    r = bench._worker({"kind": kind, "data": bench_data, "images": images, "weights": "none", "seed": 0,
                       "device": "cpu"})
    assert r["images"] >= images and r["steps"] >= 2
    assert 0 <= r["seconds_eval"] < r["seconds"] and 0 <= r["seconds_data"] < r["seconds"]
    assert 0 <= r["test_accuracy"] <= 1 and r["steady_images_per_sec"] > 0 and r["peak_memory_mb"] > 0
    assert r["image_size"] == (224 if kind == "plain" else apply_preset(kind).image_size)


@pytest.mark.slow
def test_latency_times_every_path(bench_data):
    lat = compute.latency(bench_data, CPU, 64, count=2, reps=1)
    for name in ("forward", "gradcam", "predict", "predict_gradcam"):
        assert 0 < lat[name]["p50_ms"] <= lat[name]["p95_ms"]
    assert lat["gradcam_over_forward"] > 0


@pytest.mark.slow
def test_summary_and_table(bench_data):
    seeds = [{"images": 12, "steps": 2, "seconds": 4.0, "seconds_eval": 1.0, "seconds_data": 0.5,
              "train_images_per_sec": 4.0, "test_accuracy": acc, "image_size": 128, "freeze": "none",
              "peak_memory_mb": mb, "bf16": False, "steady_images_per_sec": 3.0} for acc, mb in ((0.5, 900), (0.7, 1000))]
    row = bench.summarise(seeds)
    assert row["test_accuracy"] == pytest.approx(0.6) and row["test_accuracy_per_seed"] == [0.5, 0.7]
    assert row["peak_memory_mb"] == 1000 and row["eval_share"] == 0.25 and row["images_per_sec"] == 3.0
    assert row["attention_share"] == 0.0  # no strip recorded (the plain recipe has none)
    assert row["train_gflops"] == pytest.approx(3.0 * compute.train_flops_per_image(128) / 1e9)
    result = {"device": "cpu (2 threads)", "data": bench_data, "images": 12, "weights": "none", "seeds": [0, 1],
              "matmul_peak_gflops": 100.0, "runs": {"plain recipe": row, "fast-cpu": {**row, "images_per_sec": 9.0}},
              "compute_only": [compute.compute_only(CPU, 64, 2, False, 1, False)],
              "latency": [compute.latency(bench_data, CPU, 64, count=1, reps=1)]}
    text = bench.report(json.loads(json.dumps(result)))
    lines = text.splitlines()
    assert any(line.startswith("plain recipe") and "1.00 (1.00)" in line for line in lines)
    assert any(line.startswith("fast-cpu") and "3.00 (1.00)" in line and "0.600 (0.500, 0.700)" in line for line in lines)
    assert "compute only" in text and "latency per image" in text


def test_bad_arguments_end_with_one_sentence(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--runs", "plain,turbo"])
    assert e.value.code == 2 and "unknown run 'turbo'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.main(["--data", str(tmp_path / "missing")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_an_out_folder_that_is_a_file_is_refused_before_any_run(tmp_path, capsys):
    taken = tmp_path / "results"
    taken.write_text("")
    with pytest.raises(SystemExit) as e:
        bench.main(["--out", str(taken), "--data", str(tmp_path / "missing")])
    assert e.value.code == 2 and "is a file" in capsys.readouterr().err


def test_zero_images_is_refused_not_an_endless_run(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--images", "0"])
    assert e.value.code == 2 and "--images must be at least 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ time to accuracy
def test_time_to_accuracy_is_the_first_evaluation_at_or_above_the_threshold():
    curve = [(10.0, 0.5), (20.0, 0.86), (30.0, 0.84), (40.0, 0.91)]
    assert speedrun.first_reach(curve, 0.85) == 20.0 and speedrun.first_reach(curve, 0.9) == 40.0
    assert speedrun.first_reach(curve, 0.95) is None


def test_time_to_accuracy_summary_table_and_plot(tmp_path):
    runs = [{"curve": [(5.0, 0.6), (12.0, 0.9)], "test_accuracy": 0.9, "seconds": 20.0},
            {"curve": [(6.0, 0.86), (14.0, 0.88)], "test_accuracy": 0.8, "seconds": 22.0}]
    s = speedrun.summarise(runs, [0.85, 0.9])
    assert s["to_0.85"] == {"reached": 2, "mean_s": 9.0, "min_s": 6.0, "max_s": 12.0}
    assert s["to_0.9"]["reached"] == 1 and s["test_accuracy"]["mean"] == pytest.approx(0.85)
    result = {"data": "x/cxr-sample", "device": "cpu", "budget_s": 30.0, "thresholds": [0.85, 0.9], "seeds": [0, 1],
              "runs": {"fast-cpu": runs}, "settings": {"fast-cpu": s}}
    text = speedrun.table(result)
    assert "9 (6-12), 2/2" in text and "12 (12-12), 1/2" in text and "0.850 (0.800-0.900)" in text
    png = speedrun.plot(result, tmp_path / "t.png")
    assert png.stat().st_size > 1000


@pytest.mark.slow
def test_a_time_budgeted_run_reports_its_curve_and_test_score(bench_data):
    r = speedrun.run_one("fast-cpu", bench_data, 0, 4.0, "cpu")
    assert r["reason"] in ("time_budget", "target") and r["curve"] and 0 <= r["test_accuracy"] <= 1
    assert all(0 < t for t, _ in r["curve"]) and r["seconds"] >= r["curve"][-1][0]


def test_float32_turns_the_presets_cpu_bfloat16_off(monkeypatch, tmp_path):
    class Captured(Exception):
        pass

    seen = []

    def fake_fit(cfg, stop=None):
        seen.append(cfg)
        raise Captured
        yield

    monkeypatch.setattr("cxr.train.loop.fit", fake_fit)
    for float32 in (False, True):
        with pytest.raises(Captured):
            speedrun.run_one("fast-cpu", str(tmp_path), 0, 1.0, "cpu", float32=float32)
    assert [(c.cpu_bf16, c.image_size) for c in seen] == [(True, 112), (False, 112)]


def test_the_old_fast_preset_is_kept_for_the_comparison():
    old = speedrun.settings_for("fast-cpu-v1")
    assert (old.image_size, old.batch_size, old.lr, old.optimizer, old.schedule) == (128, 16, 3e-4, "adam", "constant")
    # the whole first-round preset, not today's with a few settings changed
    assert (old.weight_decay, old.keep, old.cpu_bf16, old.time_budget_s) == (0.0, "best", False, 0.0)
    assert old.augment == AugmentConfig()  # every augmentation was on
