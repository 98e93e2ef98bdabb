"""`python -m replay sim|real`: play a dataset episode's actions on the simulated or the real arms.

    python -m replay sim  --dataset PATH --episode N [--speed X] [--pace 1] [--start episode|home] [--dry-run]
    python -m replay real --dataset PATH --episode N [--speed X] [--dry-run] [--i-understand-this-moves-the-arm]
    (both: [--name-map index+1 | left_joint_0=left_joint1,... | FILE.toml] when the dataset names its joints
    another way; the refusal of mismatched names prints the map to pass)

Why: before evaluating a model on the rig, replaying a demonstration checks the rig itself (calibration, joint
order, gains, limits, latency) through exactly the path a policy run takes: action names checked against the
robot's joints by name, the first-action guard against the measured state (refusing, naming joints, unless
--allow-far-start, then a slow ramp), and the jerk-limited servo loop toward the interpolated actions
(time-stamped i / (fps * speed)). The report (stdout, and report.md + plots + trace.npz in --out) gives per-joint
tracking error of achieved vs dataset action, achieved vs command, and the lag.

`real` always computes and prints a dry-run preview first (nothing sent) and moves the arm only with
--i-understand-this-moves-the-arm; `--dry-run` is the preview alone. Reading a real arm's state needs its motors
enabled (holding where they are), so the preview enables them and keeps them holding.

Exit codes: 0 tracked within the thresholds (or a preview that the guard accepts), 1 tracking beyond a
threshold or e-stopped, 2 bad input or a refusal (dataset, episode, names, first-action guard, no confirmation).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from policy_norm.joint_names import NAME_MAP_FLAG, name_map_hint
from replay.arm_replay.metrics import ReplayMetrics, TrackingThresholds, compute_metrics, format_metrics
from replay.arm_replay.plan import F64, MAX_SPEED, ReplayError, ReplayPlan, load_plan
from replay.arm_replay.preview import Keepalive, Preview, format_preview, preview_replay
from replay.arm_replay.report import ReportInputs, write_report
from replay.arm_replay.run import ReplayOptions, ReplayTrace, run_replay
from replay.dataset_args import DEFAULT_ROBOT_CONFIG, add_role_arguments, dataset_options, map_joint_names
from robodata.dataset import DatasetError
from robodata.open import open_dataset
from robot_client.backends import RigOptions, get_backend
from robot_client.config import RobotConfig, RobotConfigError, load_robot_config
from robot_client.rig import Rig, RigError
from robot_client.robot import RobotError
from robot_client.safety import EStop, FirstActionError
from robot_client.servo import ServoError

EXIT_OK = 0
EXIT_TRACKING = 1
EXIT_REFUSED = 2
DEFAULT_OUT = Path("replay_out")
START_CHOICES = ("episode", "home")
# The robot backends behind `replay sim` and `replay real`.
SIM_BACKEND = "sim"
REAL_BACKEND = "yam"

RigFactory = Callable[[RobotConfig], Rig]


def build_real_rig(config: RobotConfig) -> Rig:
    """The real arms over CAN (connected, not enabled), without cameras: a replay needs none."""
    return get_backend(REAL_BACKEND).build(config, (), RigOptions())


# ---- arguments ---------------------------------------------------------------------------------------------


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset folder (LeRobot, DP zarr, recording)")
    parser.add_argument("--episode", type=int, required=True, help="episode index to replay")
    parser.add_argument("--fps", type=float, default=None, help="DP zarr only: the dataset's control rate")
    parser.add_argument("--robot-config", default="bimanual_yam", help="robot config TOML (or a bundled name)")
    add_role_arguments(parser)
    parser.add_argument("--speed", type=float, default=1.0,
                        help=f"playback speed factor in (0, {MAX_SPEED:g}]; servo limits still apply")
    parser.add_argument("--dry-run", action="store_true", help="preview only: compute commands, send none")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report folder (default {DEFAULT_OUT}/<dataset>_ep<N>_<sim|real>)")
    parser.add_argument("--allow-far-start", action="store_true",
                        help="ramp slowly to a first action beyond the guard threshold instead of refusing")
    parser.add_argument("--max-error", type=float, default=TrackingThresholds.max_arm_error,
                        help="pass limit on max |achieved - action| of arm joints (rad)")
    parser.add_argument("--max-gripper-error", type=float, default=TrackingThresholds.max_gripper_error,
                        help="pass limit on max |achieved - action| of grippers (0..1)")
    parser.add_argument("--settle", type=float, default=TrackingThresholds.settle_s,
                        help="seconds after the first action left out of the error stats")
    parser.add_argument("--no-plots", action="store_true", help="write report.md and trace.npz only")


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    _common_arguments(parser)
    parser.add_argument("--pace", type=float, default=None,
                        help="simulated seconds per wall second (1 = real time; default as fast as possible)")
    parser.add_argument("--start", choices=START_CHOICES, default="episode",
                        help="sim start pose: the episode's first state (default) or home (all zeros)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (object layout)")


def add_real_arguments(parser: argparse.ArgumentParser) -> None:
    _common_arguments(parser)
    parser.add_argument("--i-understand-this-moves-the-arm", dest="confirmed", action="store_true",
                        help="required to move the real arms (after the preview)")


# ---- shared steps ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    config: RobotConfig
    plan: ReplayPlan
    options: ReplayOptions
    thresholds: TrackingThresholds
    out_dir: Path


def _check_number(flag: str, value: float, *, zero_ok: bool) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ReplayError(f"{flag} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {value}")


def _setup(args: argparse.Namespace, mode: str) -> _Setup:
    """Everything checked before a rig exists: config, dataset, episode, names, options."""
    config = load_robot_config(args.robot_config)
    dataset = map_joint_names(open_dataset(args.dataset, **dataset_options(args)), args.name_map,
                              config.joint_names)
    plan = load_plan(dataset, args.episode, config, args.speed)
    _check_number("--max-error", args.max_error, zero_ok=False)
    _check_number("--max-gripper-error", args.max_gripper_error, zero_ok=False)
    _check_number("--settle", args.settle, zero_ok=True)
    thresholds = TrackingThresholds(max_arm_error=args.max_error, max_gripper_error=args.max_gripper_error,
                                    settle_s=args.settle)
    out_dir = args.out if args.out is not None else DEFAULT_OUT / f"{plan.dataset_name}_ep{plan.episode_index}_{mode}"
    return _Setup(config, plan, ReplayOptions(allow_far_start=args.allow_far_start), thresholds, out_dir)


def _finish(setup: _Setup, args: argparse.Namespace, mode: str, trace: ReplayTrace, out: TextIO,
            preview: Preview | None = None) -> int:
    metrics: ReplayMetrics = compute_metrics(trace, setup.plan, setup.config.gripper_indices(), setup.thresholds)
    out.write(format_metrics(metrics) + "\n")
    report = write_report(setup.out_dir, ReportInputs(mode=mode, dataset=str(args.dataset), plan=setup.plan,
                                                      trace=trace, metrics=metrics, preview=preview,
                                                      robot=setup.config.name), plots=not args.no_plots)
    out.write(f"report: {report}\n")
    return EXIT_OK if metrics.passed else EXIT_TRACKING


def _refuse_far(preview: Preview, out: TextIO) -> int:
    out.write(f"refused: the first action is farther than {preview.threshold:g} from the current state on "
              f"{list(preview.far_joints)}; move the arm closer or pass --allow-far-start to ramp there slowly\n")
    return EXIT_REFUSED


def _guarded(run: Callable[[], int]) -> int:
    """Expected failures become one `error:` line and exit code 2, never a traceback."""
    try:
        return run()
    except FirstActionError as err:
        listing = ", ".join(f"{d.name} {d.current:+.3f} -> {d.target:+.3f}" for d in err.deltas)
        sys.stderr.write(f"error: refused: the episode's first action is farther than {err.threshold:g} from the "
                         f"measured state on {listing}; start closer (sim: --start episode) or pass "
                         f"--allow-far-start to ramp there slowly\n")
        return EXIT_REFUSED
    except (DatasetError, ReplayError, RobotConfigError, RigError, RobotError, ServoError) as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_REFUSED


# ---- sim ---------------------------------------------------------------------------------------------------


def replay_sim(args: argparse.Namespace, out: TextIO) -> int:
    """Replay in MuJoCo (lockstep; --pace None = as fast as possible)."""
    return _guarded(lambda: _replay_sim(args, out))


def build_replay_sim_rig(config: RobotConfig, plan: ReplayPlan, *, start: str = "episode", seed: int = 0,
                         pace: float | None = None) -> Rig:
    """The MuJoCo rig (no cameras), its arms at the episode's first state (or home) and enabled."""
    from robot_client.sim.robot import SimRobot

    if start not in START_CHOICES:
        raise ReplayError(f"--start must be one of {START_CHOICES}, got {start!r}")
    if pace is not None and not pace > 0:
        raise ReplayError(f"--pace must be > 0, got {pace}")
    from robot_client.sim.world import SimModelError

    try:
        rig = get_backend(SIM_BACKEND).build(config, (), RigOptions(seed=seed, pace=pace))
    except SimModelError as err:
        raise ReplayError(_sim_names_refusal(config, err)) from err
    try:
        robot = rig.robot
        if not isinstance(robot, SimRobot):
            raise RigError(f"the sim rig holds a {type(robot).__name__}, not a SimRobot")
        if start == "episode":
            robot.reset(seed=seed, joint_positions=_within_limits(config, plan.start_pose()))
        robot.enable()
    except BaseException:
        rig.close()
        raise
    return rig


def _replay_sim(args: argparse.Namespace, out: TextIO) -> int:
    setup = _setup(args, "sim")
    rig = build_replay_sim_rig(setup.config, setup.plan, start=args.start, seed=args.seed, pace=args.pace)
    try:
        robot = rig.robot
        if args.dry_run:
            preview = preview_replay(robot.read_state(), setup.config, setup.plan, setup.options)
            out.write(format_preview(preview) + "\n")
            return _refuse_far(preview, out) if preview.refused else EXIT_OK
        trace = run_replay(robot, rig.clock, setup.plan, setup.options)
    finally:
        rig.close()
    return _finish(setup, args, "sim", trace, out)


def _sim_names_refusal(config: RobotConfig, err: Exception) -> str:
    """Why the simulated arms refuse this robot config, and the config plus name map that would run it: the
    model's actuators carry the bundled config's joint names, so a config renamed to suit a dataset
    (left_joint_0..) cannot drive them; the dataset's names are mapped instead."""
    bundled = load_robot_config(DEFAULT_ROBOT_CONFIG).joint_names
    hint = name_map_hint(bundled, config.joint_names, other="robot config", flag=NAME_MAP_FLAG)
    fix = (f"run with --robot-config {DEFAULT_ROBOT_CONFIG} (the model's joint names) and "
           + (hint if hint else f"{NAME_MAP_FLAG} to rename the dataset's joints to {list(bundled)}"))
    return (f"the simulated arms cannot be driven with robot config '{config.name}': {err}; its joints are "
            f"{list(config.joint_names)}; {fix}")


def _within_limits(config: RobotConfig, positions: F64) -> F64:
    """A recorded first state may sit a hair past a limit (sensor noise); the sim starts inside them."""
    arrays = config.limit_arrays()
    return np.clip(positions, arrays["lower"], arrays["upper"])


# ---- real --------------------------------------------------------------------------------------------------


def replay_real(args: argparse.Namespace, out: TextIO, rig_factory: RigFactory = build_real_rig) -> int:
    """Preview, then (only with the confirmation flag and not --dry-run) replay on the real arms."""
    return _guarded(lambda: _replay_real(args, out, rig_factory))


def _replay_real(args: argparse.Namespace, out: TextIO, rig_factory: RigFactory) -> int:
    setup = _setup(args, "real")  # every input check happens before the arms are touched
    rig = rig_factory(setup.config)
    try:
        outcome = _preview_then_run(rig, setup, args, out)
    finally:
        rig.close()  # before the report: idle motors would otherwise trip their watchdogs meanwhile
    if isinstance(outcome, int):
        return outcome
    trace, preview = outcome
    return _finish(setup, args, "real", trace, out, preview)


def _preview_then_run(rig: Rig, setup: _Setup, args: argparse.Namespace,
                      out: TextIO) -> int | tuple[ReplayTrace, Preview]:
    """The preview always; the run only when confirmed, not a dry run, and the guard accepts the start."""
    robot = rig.robot
    robot.enable()  # holds where it is; the state is only readable from enabled motors
    keepalive = Keepalive(robot.hold)
    preview = preview_replay(robot.read_state(), setup.config, setup.plan, setup.options, keepalive=keepalive)
    out.write(format_preview(preview) + "\n")
    if preview.refused:
        return _refuse_far(preview, out)
    if args.dry_run:
        out.write("dry run: nothing was sent to the arms\n")
        return EXIT_OK
    if not args.confirmed:
        out.write("not moving the arms: review the preview, then run again with "
                  "--i-understand-this-moves-the-arm\n")
        return EXIT_REFUSED
    estop = EStop()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGUSR1) or signal.SIG_DFL
    if main_thread:
        estop.install_signal(signal.SIGUSR1)
    estop.watch_keyboard()
    out.write(f"replaying {preview.total_s:.1f} s on the real arms; e-stop: type 'e' + Enter or "
              f"kill -USR1 {os.getpid()}\n")
    out.flush()
    try:
        return run_replay(robot, rig.clock, setup.plan, setup.options, estop=estop), preview
    finally:
        if main_thread:
            signal.signal(signal.SIGUSR1, previous)
