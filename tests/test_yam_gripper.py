"""Gripper motor radians <-> normalized opening, both limit orders, clipping and refusal when uncalibrated."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robot_client.config import load_robot_config
from robot_client.yam.gripper import GripperCalibrationError, GripperMap, gripper_map_for

LIMITS = [(0.0, -6.57), (-6.57, 0.0), (1.2, 4.0), (3.0, -2.5)]


@pytest.mark.parametrize(("closed", "opened"), LIMITS)
def test_endpoints_and_midpoint(closed: float, opened: float) -> None:
    g = GripperMap(closed, opened)
    assert g.to_motor(0.0) == closed and g.to_motor(1.0) == opened
    assert g.to_motor(0.5) == pytest.approx((closed + opened) / 2)
    assert g.to_normalized(closed) == 0.0 and g.to_normalized(opened) == pytest.approx(1.0)


@pytest.mark.parametrize(("closed", "opened"), LIMITS)
def test_targets_are_clipped_in_normalized_space(closed: float, opened: float) -> None:
    g = GripperMap(closed, opened)
    assert g.to_motor(1.7) == opened and g.to_motor(-0.3) == closed
    with pytest.raises(ValueError):
        g.to_motor(math.nan)


@given(st.sampled_from(LIMITS), st.floats(0.0, 1.0))
def test_round_trip(limits: tuple[float, float], opening: float) -> None:
    g = GripperMap(*limits)
    assert g.to_normalized(g.to_motor(opening)) == pytest.approx(opening, abs=1e-12)


def test_readings_are_not_clipped_and_rates_scale() -> None:
    g = GripperMap(0.0, -6.57)
    assert g.to_normalized(0.657) == pytest.approx(-0.1)
    assert g.rate_to_normalized(-6.57) == pytest.approx(1.0)


def test_uncalibrated_or_unusable_limits_are_refused() -> None:
    arm = load_robot_config("bimanual_yam").arms[0]
    assert arm.gripper_limits is None
    with pytest.raises(GripperCalibrationError, match=r"left_gripper.*not calibrated.*calibration gripper"):
        gripper_map_for(arm, 12.5)
    with pytest.raises(GripperCalibrationError, match="outside"):
        gripper_map_for(replace(arm, gripper_limits=(0.0, -13.0)), 12.5)
    with pytest.raises(GripperCalibrationError, match="span nothing"):
        GripperMap(1.0, 1.0)
    assert gripper_map_for(replace(arm, gripper_limits=(0.0, -6.57)), 12.5) == GripperMap(0.0, -6.57)
