"""Gravity feed-forward of one YAM arm (robot_client.gravity), checked against physics rather than against itself.

The torque MuJoCo's inverse dynamics gives at rest must equal the gradient of the arm's potential energy
U(q) = sum_b m_b g z_b(q) (each body's mass at its centre of mass), taken here by central differences on the
same model's kinematics: two independent routes to the same number. Tolerance 1e-4 N m (finite-difference error
at h = 1e-5 rad is ~1e-8; the rest is float rounding).
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from robot_client.gravity import (
    ARM_JOINTS,
    ARM_MODEL,
    FINGER_TRAVEL_M,
    MAKER_FACTORS,
    GravityConfig,
    GravityConfigError,
    GravityModel,
    fit_factors,
)

POSES = [
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 1.047, 1.047, 0.0, 0.0, 0.0],
    [0.5, 1.5, 0.8, -0.6, 0.3, 1.0],
    [-1.0, 2.2, 2.0, 1.2, -0.9, -0.4],
    [1.3, 0.4, 1.9, 0.9, 1.1, 0.2],
]


def potential_energy(model: mujoco.MjModel, data: mujoco.MjData, q: np.ndarray, opening: float) -> float:
    data.qpos[:ARM_JOINTS] = q
    for j in range(model.njnt):
        if model.joint(j).type == mujoco.mjtJoint.mjJNT_SLIDE:
            data.qpos[model.joint(j).qposadr[0]] = opening
    mujoco.mj_kinematics(model, data)
    g = -model.opt.gravity[2]
    return float(np.sum(model.body_mass * g * data.xipos[:, 2]))


@pytest.mark.parametrize("pose", POSES)
@pytest.mark.parametrize("gripper", [0.0, 1.0])
def test_inverse_dynamics_at_rest_is_the_gradient_of_potential_energy(pose: list[float], gripper: float) -> None:
    grav = GravityModel(GravityConfig(factors=(1.0,) * ARM_JOINTS, clip_nm=1e6))
    model = mujoco.MjModel.from_xml_path(str(ARM_MODEL))
    data = mujoco.MjData(model)
    q = np.asarray(pose)
    h = 1e-5
    grad = np.zeros(ARM_JOINTS)
    for j in range(ARM_JOINTS):
        up, down = q.copy(), q.copy()
        up[j] += h
        down[j] -= h
        opening = gripper * FINGER_TRAVEL_M
        grad[j] = (potential_energy(model, data, up, opening) - potential_energy(model, data, down, opening)) / (2 * h)
    np.testing.assert_allclose(grav.raw(q, gripper), grad, atol=1e-4)
    np.testing.assert_allclose(grav.torques(q, gripper), grad, atol=1e-4)


def test_the_arm_is_loaded_where_it_should_be() -> None:
    """Joint 1 turns about the vertical (no gravity torque); joints 2-4 carry the arm's weight at a bent pose."""
    tau = GravityModel().raw(POSES[2])
    assert abs(tau[0]) < 1e-9
    assert np.all(np.abs(tau[1:3]) > 0.5)


def test_factors_scale_and_the_clip_bounds_the_feed_forward() -> None:
    raw = GravityModel().raw(POSES[1])
    scaled = GravityModel(GravityConfig(factors=MAKER_FACTORS)).torques(POSES[1])
    np.testing.assert_allclose(scaled, np.clip(raw * np.asarray(MAKER_FACTORS), -20, 20), atol=1e-12)
    clipped = GravityModel(GravityConfig(clip_nm=1.0)).torques(POSES[1])
    assert np.abs(clipped).max() == pytest.approx(1.0)
    assert np.all(GravityModel(GravityConfig(enabled=False)).torques(POSES[1]) == 0.0)


def test_the_gripper_mass_is_carried_and_its_opening_keeps_the_centre_of_mass() -> None:
    """link6 carries the gripper housing, the fingers their own mass; the fingers open symmetrically, so their
    common centre of mass (and the torque) does not depend on the opening."""
    grav = GravityModel()
    with_gripper = grav.raw(POSES[2])
    for body in ("link6", "finger_a", "finger_b"):
        grav.model.body_mass[grav.model.body(body).id] = 0.0
    without = grav.raw(POSES[2])
    assert np.abs(with_gripper - without)[1:4].min() > 0.05
    fresh = GravityModel()
    np.testing.assert_allclose(fresh.raw(POSES[2], 0.0), fresh.raw(POSES[2], 1.0), atol=1e-9)


def test_bad_settings_and_poses_are_refused_by_name() -> None:
    with pytest.raises(GravityConfigError, match="expected 6 values"):
        GravityConfig(factors=(1.0, 1.0))
    with pytest.raises(GravityConfigError, match=r"lie in \[0, 3\]"):
        GravityConfig(factors=(1.0, 1.0, 1.0, 1.0, 1.0, -1.0))
    with pytest.raises(GravityConfigError, match="clip_nm"):
        GravityConfig(clip_nm=0.0)
    with pytest.raises(ValueError, match="joints: expected 6 finite angles"):
        GravityModel().raw([0.0, np.nan, 0.0, 0.0, 0.0, 0.0])


def test_fit_recovers_the_factors_from_noisy_holds_and_keeps_one_where_nothing_loads() -> None:
    rng = np.random.default_rng(0)
    grav = GravityModel()
    poses = [np.asarray(p) for p in POSES] + [rng.uniform(-1, 1, ARM_JOINTS) + [0, 1, 1, 0, 0, 0] for _ in range(5)]
    raw = np.stack([grav.raw(p) for p in poses])
    true = np.array([1.0, 1.25, 0.9, 1.15, 1.0, 1.0])
    measured = raw * true + rng.normal(0, 0.02, raw.shape)
    factors, residual = fit_factors(raw, measured)
    assert factors[0] == 1.0  # joint 1 carries no gravity: not fittable, left alone
    np.testing.assert_allclose(factors[1:4], true[1:4], atol=0.03)
    assert np.all(residual[1:4] < 0.05)
    with pytest.raises(ValueError, match=r"\[K, 6\]"):
        fit_factors(raw[:, :5], measured[:, :5])
