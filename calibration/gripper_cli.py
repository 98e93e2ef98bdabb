"""`python -m calibration gripper`: measure one arm's gripper closed/open motor positions, or pin them.

    python -m calibration gripper --config bimanual_yam --calibration rig_cal.toml --arm left [--torque 0.5]
    python -m calibration gripper ... --arm left --pin CLOSED OPEN

Measuring drives the gripper motor into its closing stop, then its opening stop, at low torque (kp = 0, small
kd, +-torque feed-forward) with stall detection (`calibration.gripper_stall`). While it does, every joint of the
arm is enabled and holds its measured position with the configured gains (never limp, so the arm does not drop
mid-procedure); when it ends every motor is disabled (limp), as the robot client does at exit, so start with the
arm resting at its zero pose. The jaws must be empty: an object between them collapses the span, which is
refused (nothing written).

`--pin CLOSED OPEN` writes limits measured some other way (e.g. read off a clean run), after the same span check;
it opens no bus and moves nothing.

If the rig calibration file already holds zero offsets for the arm they are applied for the driver's start-up
check (a joint reading far outside its limits refuses to enable: run `python -m calibration joints` first).

Exit status: 0 written, 1 refused (no stop, implausible span, arm fault), 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from calibration.joints_cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Ask, UsageError, add_rig_arguments, confirm

HELP = "gripper closed/open motor positions by stall detection at low torque, or --pin them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rig_arguments(parser)
    parser.add_argument("--arm", required=True, help="the arm whose gripper to calibrate")
    parser.add_argument("--torque", type=float, default=0.5, help="feed-forward torque into the stops (N m)")
    parser.add_argument("--kd", type=float, default=0.05, help="gripper damping while driven (N m s/rad)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to reach each stop")
    parser.add_argument("--pin", nargs=2, type=float, metavar=("CLOSED", "OPEN"),
                        help="write these motor positions (rad) instead of measuring (same span check)")


def run(args: argparse.Namespace, *, ask: Ask = input, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        return _run(args, ask, out)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except (ValueError, RuntimeError) as exc:  # CalibrationError, GripperCalibrationFailed, RobotError
        print(f"error: {exc}", file=err)
        return EXIT_REFUSED


def _run(args: argparse.Namespace, ask: Ask, out: TextIO) -> int:
    from calibration.gripper_stall import StallConfig, check_span, gripper_type, measure_gripper
    from calibration.joints_cli import rig_from_args
    from robot_client.calfile import (
        GripperRange,
        Measured,
        RigCalibration,
        load_calibration,
        now_iso,
        update_calibration,
        with_gripper,
    )
    from robot_client.yam import protocol as dm
    from robot_client.yam.driver import open_arm

    rig = rig_from_args(args)
    arm_cfg = rig.arm(args.arm)
    gripper_type(arm_cfg.gripper_type)
    p_max = dm.motor_limits(arm_cfg.motor_types[-1]).p_max
    try:
        stall = StallConfig(torque=args.torque, kd=args.kd, timeout_s=args.timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    current = load_calibration(rig.calibration) if rig.calibration.exists() else None
    if current is not None and current.rig != rig.config.name:
        raise ValueError(f"{rig.calibration}: calibration is for rig {current.rig!r}, not {rig.config.name!r}")

    if args.pin is not None:
        closed, opened = args.pin
        check_span(arm_cfg.gripper, arm_cfg.gripper_type, closed, opened, p_max)
        method = "pinned by hand (--pin)"
    else:
        if not confirm(f"Arm {arm_cfg.name}: {arm_cfg.gripper} ({arm_cfg.gripper_type}) will CLOSE, then OPEN, into "
                       f"its stops at {stall.torque:g} N m. Keep hands and objects out of the jaws.\nThe arm's joints "
                       f"are enabled and hold where they are; at the end every motor goes limp: rest the arm at its "
                       f"zero pose first.", args, ask, out):
            print("aborted: nothing moved or written", file=out)
            return EXIT_REFUSED
        zero = current.zero.get(arm_cfg.name) if current is not None else None
        offsets = None if zero is None else [zero.offsets.get(j, 0.0) for j in arm_cfg.joints]
        with open_arm(rig.config, arm_cfg.name, zero_offsets=offsets, options=rig.options) as yam:
            closed, opened = measure_gripper(yam, stall)
        print(f"{arm_cfg.gripper}: closing stop {closed:+.4f}, opening stop {opened:+.4f} motor rad "
              f"(span {abs(opened - closed):.3f})", file=out)
        check_span(arm_cfg.gripper, arm_cfg.gripper_type, closed, opened, p_max)
        method = stall.method
    grip = GripperRange(closed, opened, Measured(now_iso(), method))

    def change(cal: RigCalibration) -> RigCalibration:
        return with_gripper(cal, arm_cfg.name, grip)

    update_calibration(rig.calibration, rig.config.name, change)
    print(f"wrote {arm_cfg.gripper} closed {closed:+.4f} open {opened:+.4f} motor rad (span {grip.span:.3f}) to "
          f"{rig.calibration}", file=out)
    return EXIT_OK
