"""`python -m calibration gravity`: fit one arm's per-joint gravity factors on the arm and write them.

    python -m calibration gravity --config bimanual_yam --calibration rig_cal.toml --arm left            # plan only
    python -m calibration gravity ... --arm left --measure     # move, measure, print the fit; nothing written
    python -m calibration gravity ... --arm left --write       # the same, then write [arm.left.gravity]
    python -m calibration gravity ... --pose 0,0.5,0.5,0,0,0 --pose ...   # other still poses (rad, joints 1-6)

Without --measure or --write this is a dry run: it prints the poses, the speed and the time it will take, and
touches no hardware. Measuring moves the arm (`calibration.gravity_fit` describes the procedure): start with the
arm at rest near its zero pose, the gripper empty, nothing in reach. It ends back where it started, limp.

The driver uses the written factors instead of the robot config's `gravity_factors`
(`robot_client.yam.rig_calibration`). Joints whose model torque is too small to fit keep their current factor
(the calibration file's, else the config's).

Exit status: 0 done (or planned), 1 refused (the arm moved during a hold, an implausible factor, an arm fault),
2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from calibration.joints_cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Ask, UsageError, add_rig_arguments, confirm

if TYPE_CHECKING:
    from calibration.gravity_fit import GravityProcedure

HELP = "per-joint gravity factors: hold still at several poses, least squares on the motors' torque"


def _pose(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 6 comma-separated joint angles (rad), got {text!r}") from None
    if len(values) != 6:
        raise argparse.ArgumentTypeError(f"expected 6 comma-separated joint angles (rad), got {len(values)}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rig_arguments(parser)
    parser.add_argument("--arm", required=True, help="the arm to calibrate")
    parser.add_argument("--pose", action="append", type=_pose, default=None, metavar="J1,...,J6",
                        help="a still pose (rad; repeat, at least 2; default: 7 poses near home)")
    parser.add_argument("--speed", type=float, default=0.3, help="joint speed between poses (rad/s, at most 1)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to settle at each pose")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds averaged at each pose")
    parser.add_argument("--min-signal", type=float, default=0.3,
                        help="joints whose model torque is below this (N m rms over the poses) keep their factor")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--measure", action="store_true", help="move and measure; print the fit, write nothing")
    mode.add_argument("--write", action="store_true", help="move and measure, then write the factors")


def run(args: argparse.Namespace, *, ask: Ask = input, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> int:
    try:
        return _run(args, ask, out, sleep, clock)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except (ValueError, RuntimeError) as exc:  # CalibrationError, GravityCalibrationFailed, RobotError
        print(f"error: {exc}", file=err)
        return EXIT_REFUSED


def _run(args: argparse.Namespace, ask: Ask, out: TextIO, sleep: Callable[[float], None],
         clock: Callable[[], float]) -> int:
    import numpy as np

    from calibration.gravity_fit import DEFAULT_POSES, GravityProcedure, fit_arm, measure_arm
    from calibration.joints_cli import rig_from_args
    from robot_client.calfile import (
        GravityFactors,
        Measured,
        RigCalibration,
        load_calibration,
        now_iso,
        update_calibration,
        with_gravity,
    )
    from robot_client.yam.driver import open_arm
    from robot_client.yam.gravity_ff import ArmGravity, gravity_config

    rig = rig_from_args(args)
    arm_cfg = rig.arm(args.arm)
    if len(arm_cfg.joints) != 6:
        raise UsageError(f"arm {arm_cfg.name!r} has {len(arm_cfg.joints)} joints; the gravity model is the 6-joint YAM")
    try:
        proc = GravityProcedure(poses=tuple(args.pose) if args.pose else DEFAULT_POSES, speed=args.speed,
                                settle_s=args.settle, hold_s=args.hold, min_signal_nm=args.min_signal)
        limits = [rig.config.limits[j] for j in arm_cfg.joints]
        proc.check_limits([lim.lower for lim in limits], [lim.upper for lim in limits], arm_cfg.joints)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    current = load_calibration(rig.calibration) if rig.calibration.exists() else None
    if current is not None and current.rig != rig.config.name:
        raise ValueError(f"{rig.calibration}: calibration is for rig {current.rig!r}, not {rig.config.name!r}")
    zero = current.zero.get(arm_cfg.name) if current is not None else None
    grip = current.gripper.get(arm_cfg.name) if current is not None else None
    known = current.gravity.get(arm_cfg.name) if current is not None else None
    factors_now = tuple(known.factors[j] for j in arm_cfg.joints) if known is not None else arm_cfg.gravity_factors

    _print_plan(out, arm_cfg.name, arm_cfg.joints, proc, zero is not None, factors_now)
    if not (args.measure or args.write):
        print("dry run: nothing connected, nothing moved, the calibration file is unchanged (add --measure to "
              "measure, --write to measure and write)", file=out)
        return EXIT_OK
    if not confirm(f"Arm {arm_cfg.name} will MOVE through {len(proc.poses)} poses at up to {proc.speed:g} rad/s and "
                   f"hold still at each. Clear its reach, empty the gripper, and do not touch the arm until it is "
                   f"back where it started and limp.", args, ask, out):
        print("aborted: nothing moved or written", file=out)
        return EXIT_REFUSED

    offsets = [zero.offsets.get(j, 0.0) for j in arm_cfg.joints] if zero is not None else None
    limits_pair = (grip.closed, grip.open) if grip is not None else arm_cfg.gripper_limits
    hold_ff = ArmGravity(gravity_config(arm_cfg, factors_now), limits_pair)
    with open_arm(rig.config, arm_cfg.name, zero_offsets=offsets, options=rig.options, feedforward=hold_ff) as yam:
        readings = measure_arm(yam, proc, sleep, clock, progress=lambda line: print(line, file=out))
    fit = fit_arm(readings, hold_ff, factors_now, proc, arm_cfg.joints)
    for line in fit.lines(arm_cfg.joints):
        print(line, file=out)
    if not args.write:
        print("measured only: the calibration file is unchanged (add --write to write these factors)", file=out)
        return EXIT_OK
    section = GravityFactors(
        factors={j: round(float(f), 4) for j, f in zip(arm_cfg.joints, fit.factors, strict=True)},
        residual_nm={j: round(float(r), 4) for j, r in zip(arm_cfg.joints, fit.residual_nm, strict=True)},
        measured=Measured(now_iso(), proc.method))

    def change(cal: RigCalibration) -> RigCalibration:
        return with_gravity(cal, arm_cfg.name, section)

    update_calibration(rig.calibration, rig.config.name, change)
    print(f"wrote gravity factors of arm {arm_cfg.name} {np.round(fit.factors, 3).tolist()} to {rig.calibration}",
          file=out)
    return EXIT_OK


def _print_plan(out: TextIO, arm: str, joints: tuple[str, ...], proc: GravityProcedure, zeroed: bool,
                factors: tuple[float, ...]) -> None:
    print(f"gravity calibration of arm {arm}: {len(proc.poses)} still poses ({', '.join(joints)}, rad):", file=out)
    for i, pose in enumerate(proc.poses):
        print(f"  pose {i + 1}: {list(pose)}", file=out)
    print(f"between poses at up to {proc.speed:g} rad/s; at each {proc.settle_s:g} s settle + {proc.hold_s:g} s "
          f"averaged; the feed-forward in use while holding: factors {list(factors)}", file=out)
    if not zeroed:
        print("note: no zero offsets for this arm in the calibration file: the motors' own zeros are used (run "
              "`python -m calibration joints` first if they are not right)", file=out)
