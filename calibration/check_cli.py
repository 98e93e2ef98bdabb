"""`python -m calibration check`: the rig (config + calibration) against the dataset it will run.

    python -m calibration check --dataset PATH --config bimanual_yam [--robot yam|sim] [--calibration FILE]
        [--fps 30 | --policy-config policy_config.json] [--report FILE.md] [--name-map index+1|FILE|a=b,...]

One line per finding (severity, code, where: message), an optional markdown report, and the exit code
0 clean, 1 warnings only, 2 mismatches (any error; also when an input cannot be read). The checks and their
thresholds: calibration.check and the modules it names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "the rig (config + calibration) against the dataset it will run: joints, gripper, cameras, fps, latency"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="dataset the policy was trained on")
    parser.add_argument("--config", default="bimanual_yam", help="robot config TOML (or a bundled name)")
    from robot_client.backends import backend_names

    parser.add_argument("--robot", choices=backend_names(), default="yam",
                        help="which rig's cameras to compare: the config's [[camera]] tables, or the sim renderer's")
    parser.add_argument("--calibration", type=Path, help="rig calibration TOML")
    parser.add_argument("--name-map", dest="name_map", default=None, metavar="MAP",
                        help="rename the dataset's joints to the config's: a .toml/.json file ([names] table), "
                             "pairs left_joint_0=left_joint1,..., and/or index+1 (as replay and the client take it)")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, help="control rate the client will run at (the policy's control_fps)")
    rate.add_argument("--policy-config", type=Path, help="policy_config.json to take control_fps from")
    parser.add_argument("--lag-tolerance-ms", type=float, default=50.0,
                        help="allowed |dataset lag - command-to-motion latency| (at least one frame period)")
    parser.add_argument("--report", type=Path, help="write a markdown report here")


def run(args: argparse.Namespace) -> int:
    from calibration.check import EXIT_ERRORS, CheckThresholds, run_check
    from calibration.check_inputs import rig_spec, summarize
    from calibration.check_report import render_markdown
    from calibration.check_timing import TimingThresholds
    from replay.dataset_args import map_joint_names
    from robodata.dataset import DatasetError
    from robodata.open import open_dataset
    from robot_client.calfile import CalibrationError, load_calibration
    from robot_client.config import RobotConfigError, load_robot_config

    try:
        config = load_robot_config(args.config)
        calibration = load_calibration(args.calibration) if args.calibration is not None else None
        control_fps, source = _control_fps(args)
        data = summarize(map_joint_names(open_dataset(args.dataset), args.name_map, config.joint_names))
    except (RobotConfigError, CalibrationError, DatasetError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    rig = rig_spec(config, args.robot, calibration, control_fps, source, args.calibration)
    result = run_check(rig, data, CheckThresholds(timing=TimingThresholds(lag_tolerance_ms=args.lag_tolerance_ms)))
    for finding in result.findings:
        print(finding.line())
    verdict = {0: "clean", 1: "warnings only"}.get(result.exit_code, "mismatches")
    print(f"{verdict}: {len(result.findings)} finding(s); exit {result.exit_code}")
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render_markdown(result))
        print(f"report: {args.report}")
    return result.exit_code


def _control_fps(args: argparse.Namespace) -> tuple[float | None, str]:
    if args.fps is not None:
        if not args.fps > 0:
            raise ValueError(f"--fps must be > 0, got {args.fps}")
        return float(args.fps), "--fps"
    if args.policy_config is not None:
        from policy_server.policy_config import Pi05PolicyConfig

        return Pi05PolicyConfig.load(args.policy_config).control_fps, f"control_fps of {args.policy_config}"
    return None, ""
