"""`python -m calibration joints`: measure each joint's zero offset at the documented zero pose.

    python -m calibration joints --config bimanual_yam --calibration rig_cal.toml [--arm left] [--samples 200]
    python -m calibration joints ... --check
    python -m calibration joints ... --save-motor-zero --i-understand-this-writes-motor-flash

The operator poses the arm(s) at the zero pose (all joints 0: joints 2 and 3 resting on their lower stops, the
wrist straight) and confirms; the motors are then read *disabled* (`calibration.joints_read` says why), averaged,
checked (steady, plausible: `calibration.joints_zero`) and written to the arms' `zero` sections of the rig
calibration file. Nothing is written unless every selected arm passes.

`--check` writes nothing: it reads the same pose, applies the file's offsets and exits 1 naming every joint
further than `--tolerance` from 0 (a motor that slipped, a re-zeroed motor, the wrong file).

`--save-motor-zero` additionally stores the zero in the motors themselves (0xFE, motor flash), only with
`--i-understand-this-writes-motor-flash`, then verifies every joint reads |pos| < 0.01 rad and writes the
(near-zero) readings as the offsets, so file and motors agree.

Exit status: 0 done, 1 refused (not at the zero pose, unsteady, check failed, arm fault), 2 usage errors.
The helpers below (`add_rig_arguments`, `rig_from_args`, `confirm`) are shared with `calibration.gripper_cli`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from calibration.joints_zero import JointReading
    from robot_client.config import ArmConfig, RobotConfig
    from robot_client.yam.arm import YamOptions

HELP = "zero offsets at the documented zero pose (motors read disabled), or --check them"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
Ask = Callable[[str], str]

ZERO_POSE = ("the ZERO POSE: every joint at 0 rad - joints 2 and 3 resting on their lower mechanical stops (arm "
             "folded down), joint 1 centred, joints 4-6 straight")


# ---- shared with gripper_cli ------------------------------------------------------------------------------------


def add_rig_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="bimanual_yam", help="robot config TOML (or a bundled name)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="rig calibration file to write (default: the one the robot config names)")
    parser.add_argument("--yes", action="store_true", help="do not wait for Enter (the operator has set up already)")
    parser.add_argument("--reply-timeout-ms", type=float, default=10.0,
                        help="per-attempt motor reply timeout (the vendor's is 10 ms; raise it for slow adapters)")


@dataclass(frozen=True)
class RigArgs:
    config: RobotConfig
    calibration: Path
    options: YamOptions

    def arm(self, name: str) -> ArmConfig:
        """The arm called `name` in the robot config; UsageError (exit 2) naming the arms there are."""
        found = next((a for a in self.config.arms if a.name == name), None)
        if found is None:
            names = [a.name for a in self.config.arms]
            raise UsageError(f"unknown arm {name!r}; {self.config.source} has arms {names}")
        return found


class UsageError(ValueError):
    """The command line cannot be acted on (unknown arm, no calibration file named); exit status 2."""


def rig_from_args(args: argparse.Namespace) -> RigArgs:
    """The robot config, the calibration file path and driver options; UsageError (exit 2) when incomplete."""
    from robot_client.config import RobotConfigError, load_robot_config
    from robot_client.yam.arm import YamOptions

    try:
        config = load_robot_config(args.config)
    except RobotConfigError as exc:
        raise UsageError(str(exc)) from exc
    path = args.calibration or (Path(config.calibration) if config.calibration else None)
    if path is None:
        raise UsageError(f"no calibration file: pass --calibration FILE (or set [robot] calibration in "
                         f"{config.source})")
    if not args.reply_timeout_ms > 0:
        raise UsageError(f"--reply-timeout-ms must be > 0, got {args.reply_timeout_ms}")
    return RigArgs(config, path, YamOptions(reply_timeout_s=args.reply_timeout_ms / 1000.0))


def confirm(message: str, args: argparse.Namespace, ask: Ask, out: TextIO) -> bool:
    """Print the operator instructions; wait for Enter unless --yes. False when the operator aborts."""
    print(message, file=out)
    if args.yes:
        return True
    try:
        answer = ask("Press Enter to start, or type q to abort: ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() not in ("q", "quit", "n", "no")


# ---- joints -----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rig_arguments(parser)
    parser.add_argument("--arm", action="append", default=None,
                        help="arm to calibrate (repeat for several; default: every arm of the config)")
    parser.add_argument("--samples", type=int, default=200, help="readings averaged per joint")
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between readings")
    parser.add_argument("--max-offset", type=float, default=0.5,
                        help="refuse a joint reading further than this (rad) from 0: not at the zero pose")
    parser.add_argument("--max-std", type=float, default=0.002,
                        help="refuse a joint whose readings spread more than this (rad, std): it moved")
    parser.add_argument("--check", action="store_true",
                        help="write nothing: report each joint's angle at the zero pose with the file's offsets")
    parser.add_argument("--tolerance", type=float, default=0.02, help="--check: allowed |angle| at the zero pose (rad)")
    parser.add_argument("--save-motor-zero", action="store_true",
                        help="also store the zero in the joint motors (0xFE, motor flash) and verify it")
    parser.add_argument("--i-understand-this-writes-motor-flash", dest="flash_confirmed", action="store_true",
                        help="required with --save-motor-zero")


def run(args: argparse.Namespace, *, ask: Ask = input, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        return _run(args, ask, out, err)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except (ValueError, RuntimeError) as exc:  # CalibrationError, RobotError, RobotFault
        print(f"error: {exc}", file=err)
        return EXIT_REFUSED


def _run(args: argparse.Namespace, ask: Ask, out: TextIO, err: TextIO) -> int:
    if args.save_motor_zero and not args.flash_confirmed:
        raise UsageError("--save-motor-zero writes the motors' flash: add --i-understand-this-writes-motor-flash")
    if args.save_motor_zero and args.check:
        raise UsageError("--check reads only; it cannot be combined with --save-motor-zero")
    if args.samples < 2:
        raise UsageError(f"--samples must be >= 2, got {args.samples}")
    if args.interval < 0:
        raise UsageError(f"--interval must be >= 0, got {args.interval}")
    from calibration.joints_zero import ZeroCriteria, check_zero, unsteady, zero_offsets
    from robot_client.calfile import (
        JointZero,
        Measured,
        RigCalibration,
        load_calibration,
        now_iso,
        update_calibration,
        with_zero,
    )

    rig = rig_from_args(args)
    try:
        criteria = ZeroCriteria(args.max_offset, args.max_std, args.tolerance)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    arms = _select_arms(rig.config, args.arm)
    current = load_calibration(rig.calibration) if args.check else None
    if current is not None:
        absent = [a for a in arms if a not in current.zero]
        if absent:
            raise UsageError(f"{rig.calibration}: no zero offsets for arms {absent}; run `python -m calibration "
                             f"joints` without --check first")
    what = "checked against " + str(rig.calibration) if args.check else "written to " + str(rig.calibration)
    if not confirm(f"Arms {', '.join(arms)}: pose them at {ZERO_POSE}.\nThe motors are read DISABLED (limp, no "
                   f"torque): nothing moves, and an arm that was holding goes limp - support it.\n"
                   f"{args.samples} readings per joint; the result is {what}.", args, ask, out):
        print("aborted: nothing read or written", file=out)
        return EXIT_REFUSED
    readings = {arm: _read(rig, arm, args) for arm in arms}

    if current is not None:
        failed: list[str] = []
        for arm, rs in readings.items():
            problems = unsteady(rs, criteria.max_std)
            if problems:
                raise ValueError("cannot check: " + "; ".join(problems))
            for line in check_zero(rs, current.zero[arm].offsets, criteria.check_tolerance):
                print(line.describe(), file=out)
                if not line.ok:
                    failed.append(f"{line.joint} reads {line.angle:+.4f} rad at the zero pose")
        if failed:
            print(f"check FAILED (tolerance +-{criteria.check_tolerance:g} rad): " + "; ".join(failed)
                  + ". Re-pose the arm, or recalibrate with `python -m calibration joints`", file=err)
            return EXIT_REFUSED
        print(f"check passed: every joint within +-{criteria.check_tolerance:g} rad of 0 with {rig.calibration}",
              file=out)
        return EXIT_OK

    for rs in readings.values():  # every arm passes before anything is written (or re-zeroed)
        zero_offsets(rs, criteria)
    method = f"zero pose, {args.samples} readings averaged (motors disabled)"
    if args.save_motor_zero:
        readings = {arm: _save_zero(rig, arm, args) for arm in arms}
        method = f"motor zero saved (0xFE) at the zero pose, then {args.samples} readings averaged (motors disabled)"
    offsets = {arm: zero_offsets(rs, criteria) for arm, rs in readings.items()}
    for arm in arms:
        for r in readings[arm]:
            print(f"{r.joint:<16} offset {offsets[arm][r.joint]:+.4f} rad  (std {r.std:.5f}, {r.count} readings)",
                  file=out)
    stamp = Measured(now_iso(), method)

    def change(cal: RigCalibration) -> RigCalibration:
        for arm in arms:
            cal = with_zero(cal, arm, JointZero(offsets[arm], stamp))
        return cal

    update_calibration(rig.calibration, rig.config.name, change)
    print(f"wrote zero offsets of arms {', '.join(arms)} to {rig.calibration}", file=out)
    return EXIT_OK


def _select_arms(config: RobotConfig, chosen: Sequence[str] | None) -> list[str]:
    names = [a.name for a in config.arms]
    if not chosen:
        return names
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise UsageError(f"unknown arms {unknown}; {config.source} has arms {names}")
    return list(dict.fromkeys(chosen))


def _read(rig: RigArgs, arm: str, args: argparse.Namespace) -> tuple[JointReading, ...]:
    from calibration.joints_read import read_zero_pose
    from robot_client.yam.driver import open_arm

    with open_arm(rig.config, arm, options=rig.options) as yam:
        return read_zero_pose(yam, args.samples, args.interval)


def _save_zero(rig: RigArgs, arm: str, args: argparse.Namespace) -> tuple[JointReading, ...]:
    from calibration.joints_read import save_motor_zero_and_verify
    from robot_client.yam.driver import open_arm

    with open_arm(rig.config, arm, options=rig.options) as yam:
        return save_motor_zero_and_verify(yam, args.samples, args.interval)
