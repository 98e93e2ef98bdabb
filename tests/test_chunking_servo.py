"""Chunk scheduling + jerk-limited servo in simulated time: limits hold sample by sample in every mode.

Chunks come from a smooth reference motion with a per-chunk offset (so consecutive chunks disagree at their
boundaries, as real policy chunks do) and arrive after a simulated inference delay.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from robot_client.chunking import MODES, Chunk, ChunkingConfig, ChunkingError, Timeline, make_scheduler
from robot_client.config import load_robot_config
from robot_client.offline_chunking import OfflineRun, finite_differences, run_offline
from robot_client.servo import JerkLimitedServo, ServoLimits

CONFIG = load_robot_config("bimanual_yam")
LIMITS = ServoLimits.from_config(CONFIG)
SERVO_HZ = 200.0
FPS = 30.0
HORIZON = 30


def reference(t: float) -> np.ndarray:
    """A smooth bimanual motion well inside the joint limits (grippers open/close slowly)."""
    mid = (LIMITS.lower + LIMITS.upper) / 2
    span = (LIMITS.upper - LIMITS.lower) / 2
    phase = np.arange(14) * 0.7
    return np.clip(mid + 0.25 * span * np.sin(0.8 * t + phase), LIMITS.lower, LIMITS.upper)


def simulate(mode: str, duration: float = 8.0, delay: float = 0.08, chunk_offset: float = 0.05,
             seed: int = 0, **overrides: object) -> OfflineRun:
    rng = np.random.default_rng(seed)
    config = ChunkingConfig(mode=mode, fps=FPS, execute_steps=15, refill_threshold=12, **overrides)  # type: ignore[arg-type]

    def source(now: float, rtc: dict[str, Any] | None) -> np.ndarray:
        offset = rng.normal(0, chunk_offset, 14)
        actions = np.stack([reference(now + i / FPS) + offset for i in range(HORIZON)])
        if rtc is not None:  # an RTC server continues the committed part of the previous chunk
            d = rtc["inference_delay_steps"] + 1
            actions[:d] = rtc["previous_chunk_remainder"][:d]
        return actions

    run = run_offline(config, LIMITS, source, reference(0.0), duration_s=duration, servo_hz=SERVO_HZ,
                      delay=lambda t: delay)
    assert not any(c.output_clamped for c in run.commands)
    return run


def finite_difference_ratios(positions: np.ndarray, dt: float) -> tuple[float, float, float]:
    v, a, j = finite_differences(positions, dt)
    return (float(np.max(np.abs(v) / LIMITS.velocity)), float(np.max(np.abs(a) / LIMITS.acceleration)),
            float(np.max(np.abs(j) / LIMITS.jerk)))


@pytest.mark.parametrize("mode", MODES)
def test_commanded_trajectory_respects_limits_sample_by_sample(mode: str) -> None:
    result = simulate(mode)
    steps = result.commands
    positions = result.positions
    tol = 1 + 1e-6
    assert np.all(positions >= LIMITS.lower - 1e-9) and np.all(positions <= LIMITS.upper + 1e-9)
    for s in steps:
        assert np.all(np.abs(s.velocity) <= LIMITS.velocity * tol)
        assert np.all(np.abs(s.acceleration) <= LIMITS.acceleration * tol)
        assert np.all(np.abs(s.jerk) <= LIMITS.jerk * tol)
    v, a, j = finite_difference_ratios(positions, 1 / SERVO_HZ)
    assert v <= tol and a <= tol and j <= tol, (mode, v, a, j)
    assert len(result.switch_ticks) >= 5
    # The servo follows the reference motion closely despite chunk disagreements.
    ref = np.stack([reference(k / SERVO_HZ) for k in range(len(positions))])
    assert np.mean(np.abs(positions[400:] - ref[400:])) < 0.1


def test_raw_chunk_switching_would_violate_the_limits() -> None:
    # Without the servo, the piecewise-linear targets jump at chunk switches far beyond the jerk limit.
    targets = simulate("async", blend_steps=0).target_array
    _, _, j = finite_difference_ratios(targets, 1 / SERVO_HZ)
    assert j > 10


def test_async_drops_stale_actions_and_blends() -> None:
    result = simulate("async", delay=0.1)
    assert result.scheduler is not None
    stats = result.scheduler.stats
    assert stats.chunks >= 5
    assert stats.stale_dropped >= 2 * (stats.chunks - 1)  # 0.1 s at 30 fps: ~3 actions stale per chunk
    assert stats.blended > 0


def test_stale_actions_are_never_replayed_late() -> None:
    scheduler = make_scheduler(ChunkingConfig(mode="async", fps=10.0, blend_steps=0), 1)
    actions = np.arange(10, dtype=np.float64)[:, None]
    scheduler.on_chunk(Chunk(actions, obs_time=0.0, sent_time=0.0, received_time=0.35), now=0.35)
    # Actions 0..2 (t = 0, 0.1, 0.2) are gone; at 0.35 we are between action 3 (t=0.3) and 4 (t=0.4).
    assert scheduler.stats.stale_dropped == 3
    np.testing.assert_allclose(scheduler.target_at(0.35), [3.5])
    np.testing.assert_allclose(scheduler.target_at(0.30), [3.0])  # never earlier than the first fresh action


def test_sync_waits_and_executes_n_steps() -> None:
    scheduler = make_scheduler(ChunkingConfig(mode="sync", fps=10.0, execute_steps=3), 1)
    assert scheduler.needs_query(0.0) and scheduler.target_at(0.0) is None
    scheduler.plan_query(0.0)
    scheduler.on_chunk(Chunk(np.arange(10, dtype=np.float64)[:, None], 0.0, 0.0, 0.5), now=0.5)
    np.testing.assert_allclose(scheduler.target_at(0.5), [0.0])  # re-timed from arrival: the arm waited
    assert not scheduler.needs_query(0.6)
    assert scheduler.needs_query(0.71)  # 3 steps executed


def test_ensemble_weights_oldest_most() -> None:
    scheduler = make_scheduler(ChunkingConfig(mode="ensemble", fps=10.0, ensemble_decay=0.5), 1)
    scheduler.on_chunk(Chunk(np.zeros((10, 1)), 0.0, 0.0, 0.0), now=0.0)
    scheduler.on_chunk(Chunk(np.ones((10, 1)), 0.1, 0.1, 0.1), now=0.1)
    w_old, w_new = 1.0, np.exp(-0.5)
    np.testing.assert_allclose(scheduler.target_at(0.2), [w_new / (w_old + w_new)])


def test_every_scheduler_answers_future_instants_without_forgetting_the_present() -> None:
    """A servo process's plan samples the next 0.5 s of targets: asking about a later instant must not change the
    answer for an earlier one (the ensemble once pruned every chunk that ended before the instant asked)."""
    for mode in ("sync", "async", "ensemble", "rtc"):
        scheduler = make_scheduler(ChunkingConfig(mode=mode, fps=10.0, ensemble_decay=0.5), 1)
        scheduler.on_chunk(Chunk(np.zeros((10, 1)), 0.0, 0.0, 0.0), now=0.0)
        scheduler.on_chunk(Chunk(np.ones((10, 1)), 0.1, 0.1, 0.1), now=0.1)
        before = scheduler.target_at(0.2)
        scheduler.target_at(0.95)  # only the second chunk is left by then
        scheduler.target_velocity_at(0.95)
        np.testing.assert_allclose(scheduler.target_at(0.2), before, err_msg=mode)


def test_rtc_request_carries_remainder_and_delay() -> None:
    scheduler = make_scheduler(ChunkingConfig(mode="rtc", fps=10.0), 1)
    scheduler.on_chunk(Chunk(np.arange(10, dtype=np.float64)[:, None], 0.0, 0.0, 0.25), now=0.25)
    plan = scheduler.plan_query(0.5)
    assert plan.rtc is not None
    np.testing.assert_allclose(plan.rtc["previous_chunk_remainder"][:, 0], np.arange(5, 10))
    assert plan.rtc["inference_delay_steps"] == 3  # ceil(0.25 s * 10 fps)


def test_bad_chunks_are_refused() -> None:
    scheduler = make_scheduler(ChunkingConfig(mode="async"), 2)
    with pytest.raises(ChunkingError, match=r"chunk must be \[H, 2\]"):
        scheduler.on_chunk(Chunk(np.zeros((5, 3)), 0.0, 0.0, 0.0), now=0.0)
    with pytest.raises(ChunkingError, match="non-finite"):
        scheduler.on_chunk(Chunk(np.full((5, 2), np.nan), 0.0, 0.0, 0.0), now=0.0)
    with pytest.raises(ChunkingError, match="mode must be one of"):
        ChunkingConfig(mode="fast")


def test_servo_stop_decelerates_without_returning() -> None:
    servo = JerkLimitedServo(LIMITS, 1 / SERVO_HZ)
    start = reference(0.0)
    servo.reset(start)
    target = start + 0.5
    target = np.clip(target, LIMITS.lower, LIMITS.upper)
    for _ in range(60):
        servo.step(target)
    moving_pos = servo.position.copy()
    servo.stop()
    positions = [servo.step(target).position for _ in range(200)]
    assert servo.is_still()
    # Monotone deceleration towards rest: never moves back (no return to a stale target) and stops short of it.
    travel = np.stack(positions) - moving_pos
    direction = np.sign(target - moving_pos)
    assert np.all(travel * direction >= -1e-9)


def test_target_at_a_limit_is_clamped_and_never_overshot() -> None:
    servo = JerkLimitedServo(LIMITS, 1 / SERVO_HZ)
    servo.reset((LIMITS.lower + LIMITS.upper) / 2)
    beyond = LIMITS.upper + 0.3
    clamps = set()
    for _ in range(1500):
        step = servo.step(beyond)
        clamps.update(step.target_clamped)
        assert np.all(step.position <= LIMITS.upper + 1e-9) and not step.output_clamped
    assert clamps == set(CONFIG.joint_names)
    np.testing.assert_allclose(servo.position, LIMITS.upper, atol=1e-6)


def test_timeline_interpolation() -> None:
    tl = Timeline(np.array([0.0, 1.0]), np.array([[0.0], [2.0]]))
    np.testing.assert_allclose(tl.at(0.25), [0.5])
    assert tl.remaining(0.5) == 1 and tl.remaining(1.0) == 0


def test_tracking_brakes_each_joint_for_its_own_limit() -> None:
    """Velocity tracking with joints of very different speeds: the fast gripper closing onto its limit must brake
    on its own schedule (not stretched to the slow joints' velocity change) and never cross the limit."""
    servo = JerkLimitedServo(LIMITS, 1 / SERVO_HZ)
    gripper = CONFIG.joint_names.index("left_gripper")
    start = (LIMITS.lower + LIMITS.upper) / 2
    start[gripper] = LIMITS.upper[gripper]
    servo.reset(start)
    dt = 1 / SERVO_HZ
    closing = -2.0 * (LIMITS.upper[gripper] - LIMITS.lower[gripper])  # full range in 0.5 s, then held closed
    sweep = np.where(np.arange(servo.dof) == gripper, 0.0, LIMITS.velocity)  # every arm joint at full speed
    for k in range(400):
        t = k * dt
        target = np.clip(start + sweep * np.sin(t), LIMITS.lower, LIMITS.upper)
        velocity = sweep * np.cos(t)
        target[gripper] = max(LIMITS.upper[gripper] + closing * t, LIMITS.lower[gripper])
        velocity[gripper] = closing  # the feedforward keeps pushing past the limit once the target sits on it
        step = servo.step(target, velocity)
        assert not step.output_clamped, f"tick {k}: output clamped on {step.output_clamped}"
        assert LIMITS.lower[gripper] - 1e-6 <= step.position[gripper] <= LIMITS.upper[gripper] + 1e-6
    np.testing.assert_allclose(servo.position[gripper], LIMITS.lower[gripper], atol=2e-3)


def test_a_strategy_registers_itself_by_its_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new chunking strategy is one class: config validation and make_scheduler find it by its mode name."""
    from robot_client import chunking

    assert MODES == ("sync", "async", "ensemble", "rtc") == tuple(chunking.SCHEDULERS)
    assert all(cls.mode == mode for mode, cls in chunking.SCHEDULERS.items())
    monkeypatch.setattr(chunking, "SCHEDULERS", dict(chunking.SCHEDULERS))  # the test's class leaves no trace

    class HoldScheduler(chunking.SyncScheduler, mode="hold"):
        pass

    scheduler = make_scheduler(ChunkingConfig(mode="hold"), 2)
    assert isinstance(scheduler, HoldScheduler) and scheduler.mode == "hold"
    with pytest.raises(ChunkingError, match="'sync' is registered twice"):
        class _Again(chunking.SyncScheduler, mode="sync"):
            pass
