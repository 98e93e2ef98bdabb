"""One source for the YAM joint limits: the robot config the arms enforce; the tools read them from there."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from replay.make_sample_dataset import ARM_JOINTS, LOWER, UPPER
from robot_client.config import CONFIG_DIR, RobotConfigError, load_robot_config, parse_robot_config
from robot_client.yam_limits import yam_joint_limits, yam_limit, yam_limits

# i2rt yam.xml, as documented for the arm: [-150, 180], [0, 210], [0, 180], [-97, 90], [-90, 90], [-120, 120] deg.
DOCUMENTED = {
    "joint1": (-2.61799, 3.14159), "joint2": (0.0, 3.66519), "joint3": (0.0, 3.14159),
    "joint4": (-1.69297, 1.5708), "joint5": (-1.5708, 1.5708), "joint6": (-2.0944, 2.0944), "gripper": (0.0, 1.0),
}


def test_the_table_is_the_robot_configs() -> None:
    assert dict(yam_joint_limits()) == DOCUMENTED
    config = load_robot_config("bimanual_yam")
    for name in config.joint_names:
        assert yam_limit(name) == (config.limits[name].lower, config.limits[name].upper), name


def test_names_match_by_suffix() -> None:
    assert yam_limit("right_joint4") == DOCUMENTED["joint4"]
    assert yam_limit("action.gripper") == DOCUMENTED["gripper"] and yam_limit("JOINT2") == DOCUMENTED["joint2"]
    assert yam_limit("left_joint7") is None and yam_limit("elbow") is None
    assert yam_limits(["left_joint1", "base"]) == {"left_joint1": DOCUMENTED["joint1"]}


def test_the_sample_generator_reads_the_same_limits() -> None:
    lower, upper = (np.array([DOCUMENTED[j][k] for j in ARM_JOINTS] * 2) for k in (0, 1))
    np.testing.assert_array_equal(LOWER, lower)
    np.testing.assert_array_equal(UPPER, upper)


def test_arms_with_different_limits_have_no_single_table(monkeypatch: pytest.MonkeyPatch) -> None:
    import robot_client.yam_limits as module

    text = (CONFIG_DIR / "bimanual_yam.toml").read_text().replace(
        "[limits.joint1]", "[limits.right_joint1]\nlower = -1.0\nupper = 1.0\nvelocity = 1.5\nacceleration = 6.0\n"
                           "jerk = 40.0\n\n[limits.joint1]", 1)
    monkeypatch.setattr(module, "load_robot_config", lambda name: parse_robot_config(tomllib.loads(text), "edited"))
    module.yam_joint_limits.cache_clear()
    try:
        with pytest.raises(RobotConfigError, match="right_joint1 has limits"):
            module.yam_joint_limits()
    finally:
        module.yam_joint_limits.cache_clear()
