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
    # ~2,500 requests in the segment: enough for a ~0.065 drop at this simulator's per-request variation
    result = calibrate.power_run(tmp_path, seed=102, requests=4000, drop=0.075, code_share=0.7)
    assert 0.03 < result["realised_drop"] < 0.12  # a1 - 0.075 moves acceptance_rate by about 0.04-0.12
    assert result["detected"], result["reported"]
    assert result["false_alarms"] == []
