"""The run plan: which size a budgeted run trains at, decided from (stubbed) speed measurements."""

from __future__ import annotations

import json

import pytest
import torch

from cxr.train.plan import LADDER, LOOP_SHARE, MIN_IMAGES, choose_size, measure_speed, plan_size

CPU = torch.device("cpu")


def _pace_for(images: int, budget: float) -> float:
    """The images/s at which a run of `budget` seconds sees `images` training images."""
    return images / (LOOP_SHARE * budget)


def test_a_fast_machine_keeps_the_presets_size():
    fast = {112: _pace_for(3 * MIN_IMAGES, 170)}
    assert choose_size(fast, 170, 112)[0] == 112


def test_a_slow_machine_trains_at_the_largest_size_that_gets_enough_images():
    speeds = {112: _pace_for(MIN_IMAGES // 3, 170), 96: _pace_for(MIN_IMAGES // 2, 170),
              80: _pace_for(MIN_IMAGES + 100, 170), 64: _pace_for(2 * MIN_IMAGES, 170)}
    size, images = choose_size(speeds, 170, 112)
    assert size == 80 and images >= MIN_IMAGES


def test_a_machine_too_slow_for_any_size_trains_at_the_smallest():
    speeds = {s: 1.0 for s in LADDER}
    assert choose_size(speeds, 170, 112)[0] == min(LADDER)


def test_the_ceiling_is_never_exceeded():
    speeds = {s: _pace_for(10 * MIN_IMAGES, 170) for s in LADDER}
    assert choose_size(speeds, 170, 96)[0] == 96


def test_plan_measures_largest_first_and_stops_at_the_first_size_that_is_enough(tmp_path):
    asked = []
    paces = {112: _pace_for(MIN_IMAGES // 4, 170), 96: _pace_for(MIN_IMAGES * 2, 170), 80: 1e6, 64: 1e6}

    def stub(sizes, batch, classes, device, dtype, channels_last):
        asked.extend(sizes)
        return {s: paces[s] for s in sizes}

    plan = plan_size(ceiling=112, budget_s=170, batch=32, classes=3, device=CPU, dtype=None, channels_last=True,
                     cache=tmp_path / "speed.json", measure=stub)
    assert asked == [112, 96]  # 80 and 64 were not needed
    assert plan.image_size == 96
    assert "112 px" in plan.reason and "96 px" in plan.reason and "without bfloat16" in plan.reason


def test_plan_reads_this_machines_timings_from_the_cache(tmp_path):
    calls = []

    def stub(sizes, batch, classes, device, dtype, channels_last):
        calls.append(sizes)
        return {s: _pace_for(MIN_IMAGES // 2, 170) for s in sizes}

    kw = dict(ceiling=112, budget_s=170, batch=32, classes=3, device=CPU, dtype=None, channels_last=False,
              cache=tmp_path / "speed.json", measure=stub)
    first = plan_size(**kw)
    assert len(calls) == len(LADDER)
    second = plan_size(**kw)
    assert len(calls) == len(LADDER)  # nothing measured again
    assert second == first
    assert json.loads((tmp_path / "speed.json").read_text())  # kept on disk


def test_an_unreadable_cache_is_measured_again(tmp_path):
    (tmp_path / "speed.json").write_text("not json")
    plan = plan_size(ceiling=112, budget_s=170, batch=32, classes=3, device=CPU, dtype=None, channels_last=False,
                     cache=tmp_path / "speed.json", measure=lambda s, *a: {x: 1e6 for x in s})
    assert plan.image_size == 112


def test_measure_speed_times_real_steps_and_leaves_the_random_state_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    speeds = measure_speed((32,), batch=2, classes=3, device=CPU, steps=1)
    assert set(speeds) == {32} and speeds[32] > 0
    assert torch.equal(torch.rand(1), before)
