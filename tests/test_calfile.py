"""The rig calibration file: round trip, per-section updates, validation naming the field, fit to the rig."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from robot_client.calfile import (
    CalibrationError,
    CameraCalibration,
    CameraExtrinsics,
    GripperRange,
    JointZero,
    Latency,
    Measured,
    RigCalibration,
    check_against_config,
    load_calibration,
    update_calibration,
    with_camera,
    with_gripper,
    with_latency,
    with_zero,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FRESH = Measured((NOW - timedelta(days=1)).isoformat(), "test")
LEFT = [f"left_joint{i}" for i in range(1, 7)]
RIGHT = [f"right_joint{i}" for i in range(1, 7)]
ARMS = [("left", LEFT), ("right", RIGHT)]


def _camera() -> CameraCalibration:
    pose = np.eye(4)
    pose[:3, 3] = [0.01, -0.02, 0.05]
    return CameraCalibration(640, 480, np.array([[500.0, 0, 320], [0, 505.0, 240], [0, 0, 1]]),
                             np.array([0.1, -0.05, 0.001, 0.0, 0.01]), 0.2, FRESH,
                             CameraExtrinsics("left_link6", pose, FRESH, residual=1.5))


def test_sections_round_trip_and_updates_keep_the_others(tmp_path: Path) -> None:
    path = tmp_path / "rig.toml"
    offsets = {name: 0.01 * i for i, name in enumerate(LEFT)}
    update_calibration(path, "bimanual_yam", lambda c: with_zero(c, "left", JointZero(offsets, FRESH)))
    update_calibration(path, "bimanual_yam", lambda c: with_gripper(c, "left", GripperRange(0.0, -6.5, FRESH)))
    update_calibration(path, "bimanual_yam", lambda c: with_camera(c, "left_wrist", _camera()))
    update_calibration(path, "bimanual_yam",
                       lambda c: with_latency(c, Latency(12.5, {"left_wrist": 40.0}, FRESH)))
    cal = load_calibration(path)
    assert cal.zero["left"].offsets == offsets and cal.zero_offsets()["left_joint6"] == pytest.approx(0.05)
    assert cal.gripper["left"].span == pytest.approx(6.5)
    cam = cal.cameras["left_wrist"]
    np.testing.assert_array_equal(cam.camera_matrix, _camera().camera_matrix)
    assert cam.extrinsics is not None and cam.extrinsics.frame == "left_link6" and cam.extrinsics.residual == 1.5
    assert cal.latency is not None and cal.latency.camera_ms == {"left_wrist": 40.0}
    assert path.read_text().startswith("# Rig calibration (bimanual_yam)")
    with pytest.raises(CalibrationError, match="for rig 'bimanual_yam', not 'other'"):
        update_calibration(path, "other", lambda c: c)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("format_version = 1", "format_version = 7"), "format_version must be 1"),
    (lambda t: t.replace("open = -6.5", 'open = "wide"'), "arm.left.gripper.open: expected a finite number"),
    (lambda t: t.replace("width = 640", "width = -1"), "camera.left_wrist.width: expected a positive integer"),
    (lambda t: t.replace("reprojection_error_px = 0.2", "reprojection_error_px = nan"),
     "camera.left_wrist.reprojection_error_px: expected a finite number"),
    (lambda t: t.replace('method = "test"', 'method = ""', 1), "measured_at|method: expected a non-empty string"),
    (lambda t: t.replace("0.05,\n", "0.05, 0.0,\n", 1), "distortion|transform"),
])
def test_malformed_files_name_the_field(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rig.toml"
    update_calibration(path, "bimanual_yam", lambda c: with_gripper(with_camera(c, "left_wrist", _camera()), "left",
                                                                     GripperRange(0.0, -6.5, FRESH)))
    path.write_text(edit(path.read_text()))
    with pytest.raises(CalibrationError, match=message):
        load_calibration(path)


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="python -m calibration joints"):
        load_calibration(tmp_path / "none.toml")


def test_a_rotation_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rig.toml"
    update_calibration(path, "bimanual_yam", lambda c: with_camera(c, "left_wrist", _camera()))
    doc = tomllib.loads(path.read_text())
    doc["camera"]["left_wrist"]["extrinsics"]["transform"][0][0] = 2.0
    path.write_text(tomli_w.dumps(doc))
    with pytest.raises(CalibrationError, match="extrinsics.transform: the upper-left 3x3 is not a rotation"):
        load_calibration(path)


def test_fit_to_the_rig_flags_each_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "rig.toml"
    old = Measured((NOW - timedelta(days=200)).isoformat(), "test")
    cal = update_calibration(path, "bimanual_yam", lambda c: with_gripper(with_gripper(with_zero(
        c, "left", JointZero({**{n: 0.0 for n in LEFT[:5]}, "left_joint9": 0.1}, FRESH)),
        "left", GripperRange(-3.0, -3.2, FRESH)), "right", GripperRange(0.0, -6.5, old)))
    fit = check_against_config(cal, "bimanual_yam", ARMS, cameras=["top"], max_age_days=90, now=NOW)
    text = "\n".join(fit.errors)
    assert "joints ['left_joint9'] are not joints of arm 'left'" in text
    assert "missing joints ['left_joint6']" in text
    assert "arm.left.gripper: span 0.200 motor rad" in text and "implausibly small" in text
    warnings = "\n".join(fit.warnings)
    assert "arm.right.zero: no zero offsets measured" in warnings
    assert "camera.top: no intrinsics measured" in warnings
    assert "arm.right.gripper: measured 200 days ago" in warnings
    def complete(c: RigCalibration) -> RigCalibration:
        for arm, joints in ARMS:
            c = with_gripper(with_zero(c, arm, JointZero(dict.fromkeys(joints, 0.0), FRESH)), arm,
                             GripperRange(0.0, -6.5, FRESH))
        return c

    clean = check_against_config(update_calibration(path, "bimanual_yam", complete), "bimanual_yam", ARMS, now=NOW)
    assert clean.errors == () and clean.warnings == ()
    assert check_against_config(cal, "other_rig", ARMS, now=NOW).errors[0].startswith("the calibration is for rig")
