"""The commanded-motion meter: finite differences recover known peaks, and a jump in the commands is seen."""

from __future__ import annotations

import numpy as np

from robot_client.config import load_robot_config
from robot_client.motion_stats import MotionMeter
from robot_client.servo import JerkLimitedServo, ServoLimits

NAMES = ("a", "b")
LIMITS = (np.array([2.0, 2.0]), np.array([10.0, 10.0]), np.array([100.0, 100.0]))


def test_a_cubic_has_the_jerk_it_was_built_with() -> None:
    meter = MotionMeter(NAMES, *LIMITS)
    dt = 0.005
    for k in range(200):
        t = k * dt
        meter.add(t, np.array([5.0 * t ** 3, -2.0 * t ** 3]))  # jerk 30 and -12
    s = meter.summary()
    np.testing.assert_allclose(s.max_jerk, [30.0, 12.0], rtol=1e-6)
    np.testing.assert_allclose(s.jerk_ratio, [0.30, 0.12], rtol=1e-6)
    assert s.worst("jerk") == ("a", s.jerk_ratio[0])
    t_end = 199 * dt
    np.testing.assert_allclose(s.max_velocity[0], 5.0 * (t_end ** 3 - (t_end - dt) ** 3) / dt, rtol=1e-9)  # last secant


def test_a_jump_in_the_commands_shows_as_jerk_far_past_the_limit() -> None:
    meter = MotionMeter(NAMES, *LIMITS)
    for k in range(50):
        meter.add(k * 0.005, np.array([0.0 if k < 25 else 0.01, 0.0]))
    joint, ratio = meter.summary().worst("jerk")
    assert joint == "a" and ratio > 100


def test_the_servo_stays_within_its_limits_as_measured() -> None:
    """ruckig's trajectory toward a far target, differentiated from its positions, respects the config limits
    (up to the discretisation of a 200 Hz third difference)."""
    config = load_robot_config("bimanual_yam")
    limits = ServoLimits.from_config(config)
    servo = JerkLimitedServo(limits, 1.0 / config.servo_hz)
    meter = MotionMeter(config.joint_names, limits.velocity, limits.acceleration, limits.jerk)
    start = np.clip(np.zeros(config.dof), limits.lower, limits.upper)
    servo.reset(start)
    target = np.clip(start + 0.8, limits.lower, limits.upper)
    for k in range(int(3 * config.servo_hz)):
        step = servo.step(target, np.zeros(config.dof))
        meter.add(k / config.servo_hz, step.position)
    s = meter.summary()
    assert s.ticks == int(3 * config.servo_hz)
    assert float(s.velocity_ratio.max()) <= 1.0 + 1e-6
    assert float(s.acceleration_ratio.max()) <= 1.05
    assert float(s.jerk_ratio.max()) <= 1.10
    assert float(s.velocity_ratio.max()) > 0.5  # it did move


def test_streaming_peaks_equal_the_differences_of_the_whole_series() -> None:
    """Uneven tick times and random motion: the running peaks equal third differences over the stored series."""
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.004, 0.006, size=300))
    q = np.cumsum(rng.normal(0, 1e-3, size=(300, 2)), axis=0)
    meter = MotionMeter(NAMES, *LIMITS)
    for k in range(300):
        meter.add(float(t[k]), q[k])
        if k == 100:
            meter.add(float(t[k]), q[k] + 1.0)  # a repeated time stamp is ignored
    v = np.diff(q, axis=0) / np.diff(t)[:, None]
    tv = (t[1:] + t[:-1]) / 2
    a = np.diff(v, axis=0) / np.diff(tv)[:, None]
    ta = (tv[1:] + tv[:-1]) / 2
    j = np.diff(a, axis=0) / np.diff(ta)[:, None]
    s = meter.summary()
    assert s.ticks == 300
    np.testing.assert_allclose(s.max_velocity, np.abs(v).max(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.max_acceleration, np.abs(a).max(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.max_jerk, np.abs(j).max(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.rms_jerk, np.sqrt((j ** 2).mean(axis=0)), rtol=1e-9)
