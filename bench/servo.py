"""Servo benchmarks: loop timing at 200 Hz, and smoothness at chunk switches per chunking mode.

    python bench/servo.py timing [--seconds 60] [--robot sim|emulator]
        runs the real servo loop (ruckig on 14 DoF, wall clock) against a robot backend and reports the tick
        period p50/p99, |period error| p99 and overruns. Goal: p99 |period error| <= 1 ms at 200 Hz.
    python bench/servo.py smoothness [--seconds 20]
        offline (simulated time): the same chunks, arriving after the same delays, through each chunking mode
        and the jerk-limited servo; reports the peak |jerk| right after chunk switches, against the baseline of
        naive switching (targets sent straight to the robot, no servo) in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from robot_client.chunking import MODES, ChunkingConfig  # noqa: E402
from robot_client.config import load_robot_config  # noqa: E402
from robot_client.offline_chunking import (  # noqa: E402
    finite_differences,
    run_offline,
    switch_jerk_peaks,
    switch_target_jumps,
)
from robot_client.servo import ServoLimits  # noqa: E402


def smoothness(seconds: float) -> None:
    config = load_robot_config("bimanual_yam")
    limits = ServoLimits.from_config(config)
    fps, horizon, servo_hz = 30.0, 30, 200.0
    mid = (limits.lower + limits.upper) / 2
    span = (limits.upper - limits.lower) / 2

    def reference(t: float) -> np.ndarray:
        return np.clip(mid + 0.25 * span * np.sin(0.8 * t + np.arange(14) * 0.7), limits.lower, limits.upper)

    print(f"{seconds:.0f} s per mode, policy {fps:g} Hz, chunks of {horizon}, servo {servo_hz:g} Hz, inference delay "
          "80 ms, per-chunk offset N(0, 0.05 rad) (consecutive chunks disagree as real policy chunks do); "
          "the first switch (start of motion) excluded\n")
    print("| mode | switches | target jump at switch, median / max (rad) | naive switching: peak jerk / limit, "
          "median | servo: peak jerk / limit, median / max | servo: mean jerk / limit after switches | "
          "tracking error vs reference, mean (rad) |")
    print("|---|---|---|---|---|---|---|")
    for mode in MODES:
        rng = np.random.default_rng(0)

        def source(now: float, rtc: dict[str, Any] | None, rng: np.random.Generator = rng) -> np.ndarray:
            offset = rng.normal(0, 0.05, 14)
            actions = np.stack([reference(now + i / fps) + offset for i in range(horizon)])
            if rtc is not None:
                d = rtc["inference_delay_steps"] + 1
                actions[:d] = rtc["previous_chunk_remainder"][:d]
            return actions

        cfg = ChunkingConfig(mode=mode, fps=fps, execute_steps=15, refill_threshold=12)
        run = run_offline(cfg, limits, source, reference(0.0), duration_s=seconds, servo_hz=servo_hz)
        dt = 1.0 / servo_hz
        ticks = run.switch_ticks[1:]
        servo_peaks = switch_jerk_peaks(run.positions, ticks, dt, limits.jerk)
        naive_peaks = switch_jerk_peaks(run.target_array, ticks, dt, limits.jerk)
        jumps = switch_target_jumps(run.target_array, ticks)
        ref = np.stack([reference(k * dt) for k in range(len(run.positions))])
        tracking = float(np.mean(np.abs(run.positions - ref)[int(servo_hz):]))
        _, _, jerk = finite_differences(run.positions, dt)
        rel = np.abs(jerk) / limits.jerk
        mean_after = float(np.mean([rel[t: t + 10].mean() for t in ticks if t + 10 < len(rel)]))
        print(f"| {mode} | {len(ticks)} | {np.median(jumps):.4f} / {np.max(jumps):.4f} | "
              f"{np.median(naive_peaks):.0f} | {np.median(servo_peaks):.3f} / {np.max(servo_peaks):.3f} | "
              f"{mean_after:.3f} | {tracking:.4f} |")


def timing(seconds: float, robot_kind: str) -> None:
    from robot_client.control_loop import ServoLoop, WallClock
    from robot_client.servo import JerkLimitedServo

    config = load_robot_config("bimanual_yam")
    robot, config, cleanup = make_robot(robot_kind, config)
    limits = ServoLimits.from_config(config)
    servo = JerkLimitedServo(limits, 1.0 / config.servo_hz)
    with robot:
        robot.enable()
        loop = ServoLoop(robot, servo, WallClock(), deadline_s=1.0)
        start = loop.start().positions
        mid = (limits.lower + limits.upper) / 2
        t0 = time.monotonic()

        def target(t: float) -> np.ndarray:
            # A new target every tick: the hardest case for online trajectory generation.
            return np.clip(start + 0.3 * np.sin(2.0 * (t - t0) + np.arange(14)) * (mid - start + 0.5),
                           limits.lower, limits.upper)

        end = t0 + seconds
        while time.monotonic() < end:
            loop.tick(target, lambda t: 0.0)
    cleanup()
    nominal = 1.0 / config.servo_hz
    print(f"{robot_kind} robot, {config.servo_hz:g} Hz for {seconds:.0f} s: {loop.timing.summary(nominal)}")
    err = np.abs(np.asarray(loop.timing.periods) - nominal)
    print(f"goal p99 |period error| <= 1 ms: {'met' if np.percentile(err, 99) <= 1e-3 else 'NOT met'}")


def make_robot(kind: str, config: Any) -> tuple[Any, Any, Any]:
    """(robot, config, cleanup). sim: MuJoCo stepped inside each tick (one servo period of physics);
    emulator: the real CAN driver talking to emulated Damiao motors on python-can virtual buses."""
    if kind == "sim":
        from robot_client.sim.robot import SimRobot

        return SimRobot(config), config, lambda: None
    if kind == "emulator":
        from dataclasses import replace

        from robot_client.yam.driver import YamRobot
        from robot_client.yam.emulator import MotorEmulator

        arms = tuple(replace(a, can_interface="virtual", can_channel=f"bench-{a.name}", gripper_limits=(0.0, -6.57))
                     for a in config.arms)
        config = replace(config, arms=arms)
        home = {"joint2": 1.0, "joint3": 1.0}
        emulators = [MotorEmulator.for_arm(a, positions={n: home.get(n.split("_", 1)[1], 0.0) for n in a.names})
                     for a in arms]
        for emu in emulators:
            emu.start()
        return YamRobot(config), config, lambda: [e.stop() for e in emulators]
    raise SystemExit(f"unknown robot kind {kind}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("timing")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--robot", default="sim", choices=["sim", "emulator"])
    p = sub.add_parser("smoothness")
    p.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.command == "timing":
        timing(args.seconds, args.robot)
    else:
        smoothness(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
