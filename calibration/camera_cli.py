"""`python -m calibration camera {intrinsics,handeye,board}`: a camera's intrinsics and a wrist camera's pose.

    intrinsics  board images -> camera matrix + distortion          -> [camera.NAME]
    handeye     board images + the arm's pose per image -> camera pose in the wrist link
                                                                       -> [camera.NAME.extrinsics]
    board       write the board image to print

Order: intrinsics first (hand-eye reads them from the calibration file), then hand-eye with the *same* focus
and resolution. Both refuse, exit 1 and write nothing when the fit is poor; bad inputs exit 2. Light at import
(argparse only): OpenCV and MuJoCo load inside `run`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

HELP = "camera intrinsics from board images; hand-eye pose of a wrist camera; the board to print"
BOARD_HELP = ("checkerboard:COLSxROWS:SQUARE_M or charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT; COLSxROWS counts "
              "squares, sizes in metres as measured on the print (e.g. charuco:7x5:0.03:0.022:DICT_4X4_50)")
REFUSED, BAD_INPUT = 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="camera_command", required=True, metavar="step")

    intr = sub.add_parser("intrinsics", help="camera matrix and distortion from board images",
                          description="Detect the board in every image, cv2.calibrateCamera, refuse above "
                                      "--max-error-px; write [camera.NAME].")
    _common(intr)
    intr.add_argument("--max-error-px", type=float, default=1.0,
                      help="refuse when the RMS reprojection error is above this (default 1.0)")
    intr.add_argument("--min-views", type=int, default=10, help="usable views required (default 10)")
    intr.add_argument("--distortion", type=int, choices=(4, 5, 8), default=5,
                      help="distortion coefficients: 4 (k3 fixed at 0), 5 (default), 8 (rational, wide lenses)")

    he = sub.add_parser("handeye", help="pose of a wrist camera in its link (eye-in-hand)",
                        description="Board poses by solvePnP with the calibrated intrinsics, link poses from the "
                                    "poses file (joint angles through the MJCF forward kinematics, or 4x4 poses), "
                                    "AX = XB solved by Park-Martin (and cv2.calibrateHandEye's methods where this "
                                    "OpenCV exposes it); refuse when the implied board pose is inconsistent across "
                                    "views; write [camera.NAME.extrinsics] (camera in OpenCV's optical frame).")
    _common(he)
    he.add_argument("--poses", type=Path, required=True,
                    help="JSON: {\"joint_names\": [...] (optional), \"views\": {IMAGE: {\"joints\": [rad, ...]} "
                         "or {\"link_pose\": 4x4}}}")
    he.add_argument("--frame", default=None,
                    help="the body the camera is mounted on (default: ARM_link6 for a camera named ARM_wrist)")
    he.add_argument("--method", default="park",
                    choices=("park", "opencv-park", "opencv-tsai", "opencv-horaud", "opencv-andreff",
                             "opencv-daniilidis", "best"),
                    help="park (default): Park-Martin in NumPy; opencv-*: cv2.calibrateHandEye where this OpenCV "
                         "exposes it (5.0.0.93 does not); best: the most consistent of those available")
    he.add_argument("--max-residual-mm", type=float, default=5.0,
                    help="refuse when the board-in-base position spread (RMS) is above this (default 5)")
    he.add_argument("--max-residual-deg", type=float, default=1.0,
                    help="refuse when the board-in-base orientation spread (RMS) is above this (default 1)")
    he.add_argument("--min-views", type=int, default=8, help="usable views required (default 8)")
    he.add_argument("--model", type=Path, default=None, help="MJCF for the forward kinematics (default: the sim's)")

    board = sub.add_parser("board", help="write the board image to print (PNG)")
    board.add_argument("--board", required=True, help=BOARD_HELP)
    board.add_argument("--out", type=Path, required=True, help="PNG to write")
    board.add_argument("--px-per-square", type=int, default=200, help="resolution (default 200 px per square)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="directory of board images (png/jpg/bmp/tif)")
    parser.add_argument("--board", required=True, help=BOARD_HELP)
    parser.add_argument("--camera", required=True, help="camera name (as in the robot config, e.g. top, left_wrist)")
    parser.add_argument("--config", default="bimanual_yam", help="robot config name or path (default bimanual_yam)")
    parser.add_argument("--calibration", type=Path, required=True, help="the rig calibration TOML to update")
    parser.add_argument("--max-blur-px", type=float, default=2.5,
                        help="reject views whose board edges are blurred wider than this Gaussian sigma (default "
                             "2.5; a sharp image measures ~0.9)")


def run(args: argparse.Namespace) -> int:
    from calibration.board import BoardError
    from calibration.camera_intrinsics import IntrinsicsError
    from calibration.handeye import HandEyeError
    from robot_client.calfile import CalibrationError
    from robot_client.config import RobotConfigError

    steps = {"intrinsics": _intrinsics, "handeye": _handeye, "board": _board}
    try:
        return steps[args.camera_command](args)
    except (BoardError, CalibrationError, IntrinsicsError, HandEyeError, RobotConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT


def _images(directory: Path) -> list[Path]:
    from calibration.board_detect import IMAGE_SUFFIXES, list_images

    if not directory.is_dir():
        raise OSError(f"--images {directory}: not a directory")
    paths = list_images(directory)
    if not paths:
        raise OSError(f"--images {directory}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def _robot(args: argparse.Namespace) -> Any:
    from robot_client.config import load_robot_config

    return load_robot_config(args.config)


def check_camera_size(robot: Any, camera: str, width: int, height: int) -> None:
    """The images must be the size the rig streams: intrinsics scale with the resolution. A config that lists
    cameras must list this one (a typo would calibrate a camera nothing uses)."""
    from calibration.camera_intrinsics import IntrinsicsError

    entries = {c.name: c for c in robot.cameras}
    if entries and camera not in entries:
        raise IntrinsicsError(f"--camera {camera!r} is not a [[camera]] of robot config {robot.name!r} "
                              f"({sorted(entries)})")
    entry = entries.get(camera)
    if entry is None:
        return
    for label, want, got in (("width", entry.width, width), ("height", entry.height, height)):
        if want is not None and want != got:
            raise IntrinsicsError(f"images are {width}x{height}, but [[camera]] {camera!r} of {robot.name!r} has "
                                  f"{label} = {want}; calibrate at the resolution the rig streams")


def _intrinsics(args: argparse.Namespace) -> int:
    from calibration.board import parse_board
    from calibration.camera_intrinsics import (
        IntrinsicsOptions,
        calibrate_intrinsics,
        detect_views,
        format_report,
        image_size,
    )
    from robot_client.calfile import update_calibration, with_camera

    spec = parse_board(args.board)
    robot = _robot(args)
    options = IntrinsicsOptions(min_views=args.min_views, max_error_px=args.max_error_px,
                                distortion_coefficients=args.distortion, max_blur_px=args.max_blur_px)
    paths = _images(args.images)
    check_camera_size(robot, args.camera, *image_size(paths))
    views = detect_views(paths, spec, options.max_blur_px)
    result = calibrate_intrinsics(views, spec, options)
    print(format_report(result))
    for warning in result.warnings(options):
        print(f"warning: {warning}")
    problems = result.problems(options)
    if problems:
        for problem in problems:
            print(f"refused: {problem}", file=sys.stderr)
        print(f"refused: {args.calibration} left unchanged", file=sys.stderr)
        return REFUSED
    camera = result.calibration()

    def change(cal: Any) -> Any:
        old = cal.cameras.get(args.camera)
        if old is not None and old.extrinsics is not None:
            print(f"warning: camera.{args.camera}.extrinsics kept, but it was measured with the previous intrinsics; "
                  f"rerun `python -m calibration camera handeye`")
            return with_camera(cal, args.camera, replace(camera, extrinsics=old.extrinsics))
        return with_camera(cal, args.camera, camera)

    update_calibration(args.calibration, robot.name, change)
    print(f"wrote camera.{args.camera} to {args.calibration}")
    return 0


def _handeye(args: argparse.Namespace) -> int:
    from calibration.board import parse_board
    from calibration.board_detect import detect_board, read_gray
    from calibration.handeye import (
        HandEyeError,
        HandEyeOptions,
        board_pose,
        calibrate_hand_eye,
        format_report,
        link_poses,
        load_poses,
        match_views,
    )
    from robot_client.calfile import (
        CameraExtrinsics,
        Measured,
        load_calibration,
        now_iso,
        update_calibration,
        with_camera,
    )

    spec = parse_board(args.board)
    robot = _robot(args)
    cal = load_calibration(args.calibration)
    camera = cal.cameras.get(args.camera)
    if camera is None:
        raise HandEyeError(f"{args.calibration}: no camera.{args.camera} intrinsics; run `python -m calibration "
                           f"camera intrinsics --camera {args.camera}` first")
    frame = args.frame or _default_frame(args.camera)
    arm = next((a for a in robot.arms if frame.startswith(f"{a.name}_")), None)
    poses = load_poses(args.poses)
    joint_names = poses.joint_names or (arm.joints if arm is not None else ())
    paths = _images(args.images)
    match_views(poses, [p.name for p in paths])
    board_views = []
    for path in paths:
        gray = read_gray(path)
        if (gray.shape[1], gray.shape[0]) != (camera.width, camera.height):
            raise HandEyeError(f"{path.name}: image is {gray.shape[1]}x{gray.shape[0]}, but camera.{args.camera} was "
                               f"calibrated at {camera.width}x{camera.height}")
        found = detect_board(spec, gray, path.name, args.max_blur_px)
        if isinstance(found, str):
            print(f"rejected {path.name}: {found}")
            continue
        board_views.append(board_pose(found, camera.camera_matrix, camera.distortion))
    links = link_poses(poses, [v.image for v in board_views], frame, joint_names, args.model)
    options = HandEyeOptions(method=args.method, min_views=args.min_views, max_residual_mm=args.max_residual_mm,
                             max_residual_deg=args.max_residual_deg)
    result = calibrate_hand_eye(board_views, links, options)
    print(format_report(result))
    problems = result.problems(options)
    if problems:
        for problem in problems:
            print(f"refused: {problem}", file=sys.stderr)
        print(f"refused: {args.calibration} left unchanged", file=sys.stderr)
        return REFUSED
    extrinsics = CameraExtrinsics(frame, result.link_cam, Measured(now_iso(), result.method_text()),
                                  residual=round(result.spread.rms_mm, 3))
    update_calibration(args.calibration, robot.name,
                       lambda c: with_camera(c, args.camera, replace(c.cameras[args.camera], extrinsics=extrinsics)))
    print(f"wrote camera.{args.camera}.extrinsics (frame {frame}) to {args.calibration}")
    return 0


def _default_frame(camera: str) -> str:
    from calibration.handeye import HandEyeError

    if camera.endswith("_wrist"):
        return f"{camera.removesuffix('_wrist')}_link6"
    raise HandEyeError(f"--frame is needed for camera {camera!r} (the body it is mounted on, e.g. left_link6)")


def _board(args: argparse.Namespace) -> int:
    import cv2

    from calibration.board import board_image, parse_board

    spec = parse_board(args.board)
    image = board_image(spec, px_per_square=args.px_per_square)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), image):
        raise OSError(f"{args.out}: could not write the image")
    print(f"wrote {args.out}: {spec.describe()}, {image.shape[1]}x{image.shape[0]} px; print at 100% and measure a "
          f"square: give that size in --board")
    return 0
