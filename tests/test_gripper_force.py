"""The gripper force limiter on its own: stall detection, the cap it enforces by pure torque, release, bad input.

A tiny stand-in plant closes the loop: a motor under the MIT law (the frame's p_des, kp, kd and torque) driving an
inertia, blocked by a wall, stepped at 4 ms. It is not the emulator (tests/test_yam_gripper_force.py drives the
real driver against that); it is here so each rule of the limiter can be shown to matter on its own.
"""

from __future__ import annotations

import math

import pytest

from robot_client.gripper_force import (
    GripperForceConfig,
    GripperForceConfigError,
    GripperForceLimiter,
    GripperLaw,
    force_config_for,
)

KP, KD, DT = 20.0, 0.5, 0.004
PLAIN = GripperLaw(KP, KD, 0.0)  # the configured gains, no added torque: the law without a limiter


def _frame(limiter: GripperForceLimiter, t: float, p: float, v: float, tau: float,
           target: float) -> tuple[float, GripperLaw]:
    """What a frame builder sends for the gripper: the limiter's target and law."""
    sent = limiter.update(t, p, v, tau, target)
    return sent, limiter.law_to_send()


class WalledMotor:
    """MIT law with a torque range of +-10 N m, inertia 0.01, a wall at `wall` (closing = increasing position)."""

    def __init__(self, wall: float | None, position: float = -3.0) -> None:
        self.p, self.v, self.tau, self.wall = position, 0.0, 0.0, wall

    def step(self, target: float, law: GripperLaw = PLAIN) -> None:
        for _ in range(4):
            h = DT / 4
            tau = max(-10.0, min(10.0, law.kp * (target - self.p) - law.kd * self.v + law.torque_nm))
            self.v += h * tau / 0.01
            self.p += h * self.v
            if self.wall is not None and self.p >= self.wall:
                self.p, self.v = self.wall, min(0.0, self.v)
                tau = max(-10.0, min(10.0, law.kp * (target - self.p) - law.kd * self.v + law.torque_nm))
            self.tau = tau


def _close_on(wall: float | None, limiter: GripperForceLimiter | None, target: float = 0.0,
              steps: int = 500) -> tuple[WalledMotor, list[tuple[bool, float]]]:
    motor = WalledMotor(wall)
    trace = []
    for i in range(steps):
        t = i * DT
        if limiter is None:
            motor.step(target)
        else:
            motor.step(*_frame(limiter, t, motor.p, motor.v, motor.tau, target))
        trace.append((limiter is not None and limiter.grasping, motor.tau))
    return motor, trace


def test_the_cap_is_the_makers_50_newtons_at_the_motor() -> None:
    cfg = GripperForceConfig()
    assert cfg.max_torque_nm == pytest.approx(50.0 * 0.096 / 6.57 + 0.3)
    assert 1.02 < cfg.max_torque_nm < 1.04


def test_without_the_limiter_a_stalled_gripper_pushes_with_kp_times_the_error() -> None:
    _, trace = _close_on(wall=-2.0, limiter=None)
    assert trace[-1][1] == pytest.approx(KP * 2.0, rel=0.01) or trace[-1][1] == pytest.approx(10.0)
    assert trace[-1][1] > 5 * GripperForceConfig().max_torque_nm


def test_a_stall_is_detected_and_the_effort_capped_from_then_on() -> None:
    cfg = GripperForceConfig()
    limiter = GripperForceLimiter(cfg, KP, KD)
    motor, trace = _close_on(wall=-2.0, limiter=limiter)
    detected = next(i for i, (grasping, _) in enumerate(trace) if grasping)
    after = [tau for _, tau in trace[detected + 1:]]
    assert motor.p == pytest.approx(-2.0)
    assert max(abs(t) for t in after) <= cfg.max_torque_nm * 1.10
    assert after[-1] == pytest.approx(cfg.max_torque_nm, rel=0.02)  # still pressing, with the capped force
    assert limiter.grasping and limiter.grasps == 1
    assert limiter.peak_grasp_effort_nm <= cfg.max_torque_nm * 1.10 < limiter.peak_effort_nm


def test_free_motion_is_never_limited() -> None:
    limiter = GripperForceLimiter(GripperForceConfig(), KP, KD)
    motor, trace = _close_on(wall=None, limiter=limiter)
    assert not any(grasping for grasping, _ in trace)
    assert motor.p == pytest.approx(0.0, abs=1e-3)  # reached the target (moving fast while the effort was high)


def test_opening_releases_the_grasp_at_once() -> None:
    limiter = GripperForceLimiter(GripperForceConfig(), KP, KD)
    motor, _ = _close_on(wall=-2.0, limiter=limiter)
    assert limiter.grasping
    law = limiter.law_to_send()
    assert law.kp == 0.0 and law.kd == 0.0 and law.torque_nm == pytest.approx(GripperForceConfig().max_torque_nm)
    sent, law = _frame(limiter, 10.0, motor.p, motor.v, motor.tau, -5.0)  # open: target on the other side
    assert not limiter.grasping and sent == -5.0 and law == PLAIN


def test_the_grasp_releases_when_the_object_is_gone() -> None:
    limiter = GripperForceLimiter(GripperForceConfig(), KP, KD)
    motor, _ = _close_on(wall=-2.0, limiter=limiter)
    motor.wall = None  # the object slipped out: the jaws run on (pushed by the capped torque) past the stall
    t0 = 500 * DT
    released = None
    for i in range(500):
        motor.step(*_frame(limiter, t0 + i * DT, motor.p, motor.v, motor.tau, 0.0))
        if released is None and not limiter.grasping:
            released = i
    assert released is not None and released * DT < 0.05  # released by the motion, not after a fading window
    assert not limiter.grasping and limiter.grasps == 1  # not re-detected on the way
    assert motor.p == pytest.approx(0.0, abs=1e-3)  # free again: it reaches its target


def test_a_short_effort_spike_while_moving_is_not_a_stall() -> None:
    cfg = GripperForceConfig()
    limiter = GripperForceLimiter(cfg, KP, KD)
    for i in range(100):  # slow but steady motion with high effort: speed above the threshold
        limiter.update(i * DT, -3.0 + i * DT * 1.0, 1.0, 5.0, 0.0)
    assert not limiter.grasping
    # Still with high effort, but not for a whole window yet after a reset: not a stall either.
    limiter.reset()
    limiter.update(0.0, -2.0, 0.0, 5.0, 0.0)
    assert not limiter.grasping
    limiter.update(cfg.window_s, -2.0, 0.0, 5.0, 0.0)
    assert limiter.grasping


def test_a_grasping_frame_is_pure_torque_within_the_cap() -> None:
    """Whatever the jaws do once grasping, the frame asks the motor for at most the cap: kp = kd = 0, so between two
    frames neither the jaws' motion (squeezed pads springing back) nor a late speed reading can add to it."""
    cfg = GripperForceConfig()
    limiter = GripperForceLimiter(cfg, KP, KD)
    laws = []
    for i in range(60):
        p = -2.0 + 0.001 * math.sin(i)
        v = 5.0 * math.sin(0.7 * i) if limiter.grasping else 0.0  # jaws springing back and forth after detection
        sent, law = _frame(limiter, i * DT, p, v, 8.0, 0.0)
        if limiter.grasping:
            assert law.kp == 0.0 and law.kd == 0.0 and sent == p
            laws.append(law.torque_nm)
        else:
            assert law == PLAIN and sent == 0.0
    assert limiter.grasping and len(laws) > 30
    assert max(abs(tau) for tau in laws) <= cfg.max_torque_nm + 1e-12
    assert laws[0] == pytest.approx(cfg.max_torque_nm)  # toward the target (closing = increasing position)


def test_a_target_brought_close_presses_less_and_then_releases() -> None:
    cfg = GripperForceConfig()
    limiter = GripperForceLimiter(cfg, KP, KD)
    motor, _ = _close_on(wall=-2.0, limiter=limiter)
    assert limiter.grasping
    t0 = 500 * DT
    pushes = []
    for i in range(100):  # the target 5 mrad beyond the jaws: kp x 0.005 = 0.1 N m, below the release effort
        motor.step(*_frame(limiter, t0 + i * DT, motor.p, motor.v, motor.tau, -1.995))
        pushes.append(abs(motor.tau))
        if not limiter.grasping:
            break
    assert not limiter.grasping and limiter.grasps == 1
    assert max(pushes) <= cfg.max_torque_nm + 1e-12 and pushes[-2] < 0.5 * cfg.max_torque_nm


class SqueezedPads:
    """The motor's MIT law (torque range +-10 N m) on an inertia of 0.01 pressing into a compliant object (pads):
    stiffness 500 N m / rad and damping 0.5 N m s / rad from `wall` on (closing = increasing position). Stepped at
    0.5 ms; the frame builder runs every `period` steps and the motor holds its last frame in between, as the
    firmware does."""

    H, INERTIA, STIFFNESS, DAMPING = 0.0005, 0.01, 500.0, 0.5

    def __init__(self, wall: float) -> None:
        self.p, self.v, self.tau, self.wall = wall, 0.0, 0.0, wall

    def step(self, target: float, law: GripperLaw) -> None:
        self.tau = max(-10.0, min(10.0, law.kp * (target - self.p) - law.kd * self.v + law.torque_nm))
        squeeze = self.p - self.wall
        pad = -max(0.0, self.STIFFNESS * squeeze + self.DAMPING * self.v) if squeeze > 0 else 0.0
        self.v += self.H * (self.tau + pad) / self.INERTIA
        self.p += self.H * self.v


def _squeeze(limiter: GripperForceLimiter, period: int, seconds: float = 0.5) -> tuple[SqueezedPads, list[float]]:
    """Close on the pads (target far beyond them); the motor's effort from the first capped step on."""
    pads = SqueezedPads(wall=-2.0)
    after: list[float] = []
    sent, law = 0.0, PLAIN
    for i in range(int(seconds / pads.H)):
        if i % period == 0:
            sent, law = _frame(limiter, i * pads.H, pads.p, pads.v, pads.tau, 0.0)
        pads.step(sent, law)
        if limiter.grasping:
            after.append(pads.tau)
    return pads, after


@pytest.mark.parametrize("period", [1, 8])  # frames every 0.5 ms, and every 4 ms (the real driver's sender)
def test_the_cap_holds_from_detection_on_while_squeezed_pads_spring_back(period: int) -> None:
    """Squeezed at the motor's full 10 N m for the detection window, the pads spring back once the push drops to
    the cap. A position law would add to the cap between frames (kd x the opening speed, kp x the distance opened);
    the pure torque of a grasping frame adds nothing, however long the motor holds the frame."""
    cfg = GripperForceConfig()
    pads, after = _squeeze(GripperForceLimiter(cfg, KP, KD), period)
    assert len(after) > 0.3 / pads.H
    assert max(abs(tau) for tau in after) <= cfg.max_torque_nm * (1 + 1e-9)
    assert after[-1] == pytest.approx(cfg.max_torque_nm, rel=0.02)  # still pressing, with the capped force
    assert pads.p - pads.wall == pytest.approx(cfg.max_torque_nm / pads.STIFFNESS, rel=0.05)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_force_n": 0.0}, "max_force_n"), ({"stroke_m": -1.0}, "stroke_m"), ({"window_s": math.nan}, "window_s"),
    ({"smoothing": 0.0}, "smoothing"), ({"friction_nm": -0.1}, "friction_nm"),
    ({"release_effort_nm": 0.6}, "release_effort_nm"), ({"give_way_rad": 0.0}, "give_way_rad"),
])
def test_bad_settings_are_refused_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(GripperForceConfigError, match=field):
        GripperForceConfig(**kwargs)


def test_bad_gain_type_and_input_are_refused() -> None:
    with pytest.raises(GripperForceConfigError, match="kp"):
        GripperForceLimiter(GripperForceConfig(), 0.0, KD)
    with pytest.raises(GripperForceConfigError, match="kd"):
        GripperForceLimiter(GripperForceConfig(), KP, -0.5)
    with pytest.raises(GripperForceConfigError, match="kd"):
        GripperForceLimiter(GripperForceConfig(), KP, math.nan)
    with pytest.raises(GripperForceConfigError, match="gripper_type 'claw'"):
        force_config_for("claw")
    assert force_config_for("crank_4310").clog_speed == pytest.approx(0.2)
    with pytest.raises(ValueError, match="effort"):
        GripperForceLimiter(GripperForceConfig(), KP, KD).update(0.0, 0.0, 0.0, math.inf, 0.0)
