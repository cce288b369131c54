"""A fast slice of benchmarks/calibrate.py: simulated healthy fleets raise no false alarm, and a drop in one task's
acceptance after a draft rollout is found on exactly that segment (the full calibration over many seeds is in
docs/diagnose.md)."""

from __future__ import annotations

import importlib.util
from datetime import datetime
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
    # a drop at the start of the week's last day: ~300 requests of main/code after it, ~1,800 before (the regime of
    # the "~300 after" rows of docs/diagnose.md, Calibration)
    result = calibrate.power_run(
        tmp_path, seed=102, requests=10_000, drop=0.05, code_share=0.24, incident_at=6 / 7
    )
    assert 250 < result["requests_after"] < 350 and result["requests_before"] > 1500
    # the a1 drop is solved so that the true acceptance_rate falls by 0.05; the realised drop has SE ~0.011 here
    assert 0.02 < result["realised_drop"] < 0.08
    assert result["se_stratified"] < result["se_pooled"]  # the spread between temperatures leaves the SE
    assert result["detected"], result["reported"]
    assert result["false_alarms"] == []


def test_incident_start_is_the_fraction_of_the_week() -> None:
    assert calibrate.incident_start(0.5) == datetime(2026, 11, 19, 12)
    assert calibrate.incident_start(6 / 7) == datetime(2026, 11, 22)


def test_rate_drop_maps_to_the_first_position_drop_that_causes_it() -> None:
    for k in (6.0, 35.0):
        a1 = calibrate.a1_drop_for(0.05, k)
        assert calibrate.true_rate(0.0, k) - calibrate.true_rate(a1, k) == pytest.approx(0.05, abs=1e-6)
    # acceptance_rate at tau 4 moves faster than a_1 (every later position moves with it)
    assert calibrate.a1_drop_for(0.05, 35.0) < 0.05
