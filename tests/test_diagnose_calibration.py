"""A fast slice of benchmarks/calibrate.py: simulated healthy fleets raise no false alarm, and a drop in one task's
acceptance after a draft rollout is found on exactly that segment (the full calibration over many seeds is in
docs/diagnose.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("calibrate", ROOT / "benchmarks" / "calibrate.py")
assert spec is not None and spec.loader is not None
calibrate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibrate)


@pytest.mark.slow
def test_healthy_simulated_fleet_raises_no_alarm(tmp_path: Path) -> None:
    result = calibrate.healthy_run(tmp_path, seed=101, requests=3000)
    assert result["false_alarms"] == []


@pytest.mark.slow
def test_draft_rollout_drop_is_found_on_its_segment(tmp_path: Path) -> None:
    # ~2,400 requests in the segment: a 0.05 drop was found in 18 of 20 runs at ~1,240 (docs/diagnose.md, Calibration)
    result = calibrate.power_run(tmp_path, seed=102, requests=4000, drop=0.05, code_share=0.7)
    # the a1 drop is solved so that the true acceptance_rate falls by 0.05; the realised drop has SE ~0.007 here
    assert 0.03 < result["realised_drop"] < 0.07
    assert result["detected"], result["reported"]
    assert result["false_alarms"] == []


def test_rate_drop_maps_to_the_first_position_drop_that_causes_it() -> None:
    for k in (6.0, 35.0):
        a1 = calibrate.a1_drop_for(0.05, k)
        assert calibrate.true_rate(0.0, k) - calibrate.true_rate(a1, k) == pytest.approx(0.05, abs=1e-6)
    # acceptance_rate at tau 4 moves faster than a_1 (every later position moves with it)
    assert calibrate.a1_drop_for(0.05, 35.0) < 0.05
