"""Camera calibration (`python -m calibration camera ...`) on synthetic images of a *known* camera.

The images are rendered exactly through OpenCV's camera model (tests/calibration_camera_helpers.py): true K and
distortion, 640x480, 2x2 sub-sampling, Gaussian blur sigma 0.5 px and sensor noise sigma 1.5 grey levels, fixed
seeds. Real OpenCV throughout (detection, calibrateCamera, solvePnP), no mocks.

Stated tolerances (and what was measured when they were set):
- intrinsics, checkerboard 10x7 squares, 14 views: fx, fy, cx, cy within 1% of the truth (measured <= 0.25%);
  RMS reprojection error < 0.3 px (0.10); two held-out views (not calibrated on) reproject with the recovered
  model, after solvePnP, within 0.3 px RMS (0.05). (Comparing where the true and the recovered model send the
  same ray is no fair test: a focal length 0.3% long with boards 0.3% farther gives the same images, and moves
  the image edge by ~1 px; far corners the boards never reached are extrapolation.)
- intrinsics, ChArUco 7x5 (partial views), 12 views of a wide (~75 deg) wrist camera: the same 1% and 0.3 px
  (measured <= 0.21%, 0.12 px).
- hand-eye, 12 views whose link poses come from the MJCF forward kinematics: the camera pose in left_link6
  within 3 mm and 0.5 deg of the truth, with the true intrinsics (measured 0.34 mm, 0.04 deg) and through the
  CLI with the intrinsics calibrated above (1.2 mm, 0.06 deg); board-in-base spread < 1 mm / 0.2 deg (0.11 mm,
  0.03 deg).
- blur: a sharp render measures ~0.9 px edge width; a set blurred with sigma 3 px (measures ~3.1) is refused
  at the default --max-blur-px 2.5 although the detector still finds every board.
- refusals: too few views, a blurred set, a mixed-size set, a size that is not the config's, an RMS above
  --max-error-px, inconsistent arm poses: non-zero exit, the reason (naming images or fields) on stderr, and the
  calibration file not written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import camera_cli
from calibration.board import BoardError, parse_board
from calibration.board_detect import detect_board, read_gray
from calibration.camera_intrinsics import IntrinsicsOptions, calibrate_intrinsics, detect_views
from calibration.cli import main
from calibration.handeye import (
    BoardView,
    HandEyeError,
    HandEyeOptions,
    available_methods,
    board_pose,
    calibrate_hand_eye,
    rotation_angle_deg,
    solve,
)
from robot_client.calfile import CameraCalibration, Measured, load_calibration, now_iso, update_calibration, with_camera
from robot_client.config import CONFIG_DIR
from tests.calibration_camera_helpers import (
    LEFT_JOINTS,
    ArmViews,
    BoardRenderer,
    SynthCamera,
    arm_views,
    random_board_poses,
    sim_wrist_camera_in_link6,
)

RELATIVE_K_TOL = 0.01
MAX_RMS_PX = 0.3
MAX_HANDEYE_MM, MAX_HANDEYE_DEG = 3.0, 0.5

CHECKER = "checkerboard:10x7:0.025"
CHARUCO = "charuco:7x5:0.04:0.03:DICT_4X4_50"
K_TOP = np.array([[600.0, 0.0, 322.0], [0.0, 604.0, 236.0], [0.0, 0.0, 1.0]])
D_TOP = np.array([-0.15, 0.08, 0.001, -0.0005, 0.0])
K_WRIST = np.array([[315.0, 0.0, 318.0], [0.0, 313.0, 243.0], [0.0, 0.0, 1.0]])  # ~75 deg vertical field
D_WRIST = np.array([-0.08, 0.02, 0.0005, -0.0003, 0.0])


# ---- fixtures: rendered image sets -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def top() -> SynthCamera:
    return SynthCamera(640, 480, K_TOP, D_TOP)


@pytest.fixture(scope="module")
def wrist() -> SynthCamera:
    return SynthCamera(640, 480, K_WRIST, D_WRIST)


def _write(directory: Path, images: list[np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(directory / f"view_{i:03d}.png"), image)
    return directory


@pytest.fixture(scope="module")
def checker_dir(tmp_path_factory: pytest.TempPathFactory, top: SynthCamera) -> Path:
    """14 views to calibrate on; two more in the sibling folder "holdout" to validate with."""
    renderer = BoardRenderer(parse_board(CHECKER))
    rng = np.random.default_rng(0)
    images = [renderer.render(top, p, rng) for p in random_board_poses(top, renderer, 16, rng)]
    root = tmp_path_factory.mktemp("checker")
    _write(root / "holdout", images[14:])
    return _write(root / "images", images[:14])


@pytest.fixture(scope="module")
def wrist_intrinsics_dir(tmp_path_factory: pytest.TempPathFactory, wrist: SynthCamera) -> Path:
    renderer = BoardRenderer(parse_board(CHARUCO))
    rng = np.random.default_rng(1)
    poses = random_board_poses(wrist, renderer, 12, rng, distance=(0.25, 0.45), whole_board=False)
    return _write(tmp_path_factory.mktemp("wrist_intrinsics"), [renderer.render(wrist, p, rng) for p in poses])


@pytest.fixture(scope="module")
def link6_cam() -> np.ndarray:
    return sim_wrist_camera_in_link6()


@pytest.fixture(scope="module")
def handeye_set(tmp_path_factory: pytest.TempPathFactory, wrist: SynthCamera,
                link6_cam: np.ndarray) -> tuple[Path, ArmViews]:
    """12 wrist-camera views of a board on the table, and poses.json with each view's joint angles."""
    renderer = BoardRenderer(parse_board(CHARUCO))
    rng = np.random.default_rng(2)
    views = arm_views(wrist, renderer, link6_cam, 12, rng)
    directory = _write(tmp_path_factory.mktemp("handeye") / "images",
                       [renderer.render(wrist, p, rng) for p in views.cam_board])
    poses = {"joint_names": list(LEFT_JOINTS),
             "views": {f"view_{i:03d}.png": {"joints": q.tolist()} for i, q in enumerate(views.joints)}}
    (directory.parent / "poses.json").write_text(json.dumps(poses, indent=1))
    return directory, views


def _cli(argv: list[str]) -> int:
    """`python -m calibration camera ARGV`, in-process (the dispatcher builds every command's parser)."""
    return main(["camera", *argv])


def _assert_recovers(camera: SynthCamera, matrix: np.ndarray) -> None:
    true = camera.camera_matrix
    got = [matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]]
    want = [true[0, 0], true[1, 1], true[0, 2], true[1, 2]]
    for label, g, w in zip(("fx", "fy", "cx", "cy"), got, want, strict=True):
        assert abs(g / w - 1) < RELATIVE_K_TOL, f"{label} {g:.2f} vs true {w:.2f}"


def _holdout_rms(directory: Path, spec: str, matrix: np.ndarray, distortion: np.ndarray) -> float:
    """RMS reprojection error (px) of views the calibration never saw, each posed by solvePnP."""
    squared: list[float] = []
    for path in sorted(directory.glob("*.png")):
        found = detect_board(parse_board(spec), read_gray(path), path.name)
        assert not isinstance(found, str), found
        view = board_pose(found, matrix, distortion)
        squared.append(view.error_px ** 2)
    return float(np.sqrt(np.mean(squared)))


# ---- intrinsics ------------------------------------------------------------------------------------------------


def test_checkerboard_intrinsics_recover_the_known_camera(checker_dir: Path, top: SynthCamera) -> None:
    spec = parse_board(CHECKER)
    views = detect_views(sorted(checker_dir.glob("*.png")), spec)
    assert not views.rejected and len(views.detections) == 14
    options = IntrinsicsOptions()
    result = calibrate_intrinsics(views, spec, options)
    assert result.rms_px < MAX_RMS_PX and max(result.per_view_px.values()) < 2 * MAX_RMS_PX
    assert result.problems(options) == []
    _assert_recovers(top, result.camera_matrix)
    assert _holdout_rms(checker_dir.parent / "holdout", CHECKER, result.camera_matrix, result.distortion) < MAX_RMS_PX
    assert (result.width, result.height) == (640, 480)
    cal = result.calibration()
    assert "checkerboard 10x7 squares, 25 mm, 14 views" in cal.measured.method


def test_too_few_views_are_refused_naming_the_rejected_images(tmp_path: Path, checker_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(checker_dir.glob("*.png"))[:5]:
        shutil.copy(path, images / path.name)
    blank = np.full((480, 640), 128, dtype=np.uint8)
    cv2.imwrite(str(images / "wall.png"), blank)
    out = tmp_path / "rig.toml"
    code = _cli(["intrinsics", "--images", str(images), "--board", CHECKER, "--camera", "top",
                 "--calibration", str(out)])
    err = capsys.readouterr().err
    assert code == camera_cli.BAD_INPUT and not out.exists()
    assert "only 5 usable views of 6 images, need at least 10" in err
    assert "rejected wall.png: checkerboard with 9x6 inner corners not found" in err


def test_a_blurred_set_is_refused_with_the_reason(tmp_path: Path, checker_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "blurred"
    images.mkdir()
    for path in sorted(checker_dir.glob("*.png"))[:10]:
        sharp = read_gray(path)
        cv2.imwrite(str(images / path.name), cv2.GaussianBlur(sharp, (0, 0), 3.0))  # defocus
    out = tmp_path / "rig.toml"
    code = _cli(["intrinsics", "--images", str(images), "--board", CHECKER, "--camera", "top",
                 "--calibration", str(out), "--min-views", "3"])
    err = capsys.readouterr().err
    assert code == camera_cli.BAD_INPUT and not out.exists()
    assert "only 0 usable views of 10 images" in err
    assert "rejected view_000.png: blurred: the board's edges are as wide as a Gaussian blur of 3." in err


def test_mixed_and_unconfigured_image_sizes_are_refused(tmp_path: Path, checker_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "mixed"
    shutil.copytree(checker_dir, images)
    odd = read_gray(images / "view_003.png")
    cv2.imwrite(str(images / "view_003.png"), cv2.resize(odd, (320, 240)))
    out = tmp_path / "rig.toml"
    code = _cli(["intrinsics", "--images", str(images), "--board", CHECKER, "--camera", "top",
                 "--calibration", str(out)])
    assert code == camera_cli.BAD_INPUT and not out.exists()
    assert "view_003.png: image is 320x240, but view_000.png is 640x480" in capsys.readouterr().err

    config = tmp_path / "rig_with_cameras.toml"
    config.write_text((CONFIG_DIR / "bimanual_yam.toml").read_text()
                      + '\n[[camera]]\nname = "top"\nwidth = 1280\nheight = 720\n')
    code = _cli(["intrinsics", "--images", str(checker_dir), "--board", CHECKER, "--camera", "top",
                 "--config", str(config), "--calibration", str(out)])
    err = capsys.readouterr().err
    assert code == camera_cli.BAD_INPUT and not out.exists()
    assert "images are 640x480, but [[camera]] 'top' of 'bimanual_yam' has width = 1280" in err
    code = _cli(["intrinsics", "--images", str(checker_dir), "--board", CHECKER, "--camera", "tpo",
                 "--config", str(config), "--calibration", str(out)])
    assert code == camera_cli.BAD_INPUT and "--camera 'tpo' is not a [[camera]]" in capsys.readouterr().err


def test_an_error_above_the_threshold_is_refused_and_nothing_written(
        tmp_path: Path, wrist_intrinsics_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rig.toml"
    code = _cli(["intrinsics", "--images", str(wrist_intrinsics_dir), "--board", CHARUCO, "--camera", "left_wrist",
                 "--calibration", str(out), "--max-error-px", "0.01"])
    captured = capsys.readouterr()
    assert code == camera_cli.REFUSED and not out.exists()
    assert "exceeds --max-error-px 0.01" in captured.err and "left unchanged" in captured.err
    assert "per view (RMS px): view_000.png" in captured.out  # the report is printed even when refused


# ---- intrinsics + hand-eye through the CLI ---------------------------------------------------------------------


def test_cli_writes_intrinsics_then_handeye_and_the_file_loads_back(
        tmp_path: Path, wrist: SynthCamera, wrist_intrinsics_dir: Path, handeye_set: tuple[Path, ArmViews],
        link6_cam: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rig.toml"
    assert _cli(["intrinsics", "--images", str(wrist_intrinsics_dir), "--board", CHARUCO,
                 "--camera", "left_wrist", "--calibration", str(out)]) == 0
    cam = load_calibration(out).cameras["left_wrist"]
    assert (cam.width, cam.height) == (640, 480) and cam.reprojection_error_px < MAX_RMS_PX
    _assert_recovers(wrist, cam.camera_matrix)
    assert cam.measured.method.startswith("charuco 7x5 squares, 40 mm, markers 30 mm DICT_4X4_50, 12 views")

    images, _ = handeye_set
    assert _cli(["handeye", "--images", str(images), "--poses", str(images.parent / "poses.json"),
                 "--board", CHARUCO, "--camera", "left_wrist", "--calibration", str(out)]) == 0
    report = capsys.readouterr().out
    assert "wrote camera.left_wrist.extrinsics (frame left_link6)" in report
    cal = load_calibration(out)
    again = cal.cameras["left_wrist"]
    np.testing.assert_array_equal(again.camera_matrix, cam.camera_matrix)  # intrinsics kept
    ex = again.extrinsics
    assert ex is not None and ex.frame == "left_link6" and "Park-Martin" in ex.measured.method
    assert ex.residual is not None and ex.residual < 1.0
    error = np.linalg.inv(link6_cam) @ ex.transform
    assert np.linalg.norm(error[:3, 3]) * 1000 < MAX_HANDEYE_MM
    assert rotation_angle_deg(error[:3, :3]) < MAX_HANDEYE_DEG


def _true_intrinsics(path: Path) -> None:
    camera = CameraCalibration(640, 480, K_WRIST, D_WRIST, 0.1, Measured(now_iso(), "test: the true camera"))
    update_calibration(path, "bimanual_yam", lambda c: with_camera(c, "left_wrist", camera))


def test_handeye_recovers_the_camera_in_link6(handeye_set: tuple[Path, ArmViews], link6_cam: np.ndarray) -> None:
    images, views = handeye_set
    spec = parse_board(CHARUCO)
    board_views = []
    for path in sorted(images.glob("*.png")):
        found = detect_board(spec, read_gray(path), path.name)
        assert not isinstance(found, str), found
        board_views.append(board_pose(found, K_WRIST, D_WRIST))
    links = {v.image: link for v, link in zip(board_views, views.base_link6, strict=True)}
    options = HandEyeOptions()
    result = calibrate_hand_eye(board_views, links, options)
    assert result.problems(options) == [] and result.views == 12
    assert result.spread.rms_mm < 1.0 and result.spread.rms_deg < 0.2
    error = np.linalg.inv(link6_cam) @ result.link_cam
    assert np.linalg.norm(error[:3, 3]) * 1000 < MAX_HANDEYE_MM
    assert rotation_angle_deg(error[:3, :3]) < MAX_HANDEYE_DEG
    if "opencv-park" in available_methods():  # opencv-python 5.0.0.93 lacks cv2.calibrateHandEye
        ours = result.link_cam
        theirs = solve([links[v.image] for v in board_views], [v.cam_board for v in board_views], "opencv-park")
        assert np.linalg.norm(ours[:3, 3] - theirs[:3, 3]) < 1e-3


def test_handeye_refuses_poses_that_do_not_match_the_images(
        tmp_path: Path, handeye_set: tuple[Path, ArmViews], capsys: pytest.CaptureFixture[str]) -> None:
    images, views = handeye_set
    out = tmp_path / "rig.toml"
    _true_intrinsics(out)
    shuffled = views.joints[1:] + views.joints[:1]  # each image gets its neighbour's joint angles
    poses = tmp_path / "poses.json"
    poses.write_text(json.dumps({"views": {f"view_{i:03d}.png": {"joints": q.tolist()}
                                           for i, q in enumerate(shuffled)}}))
    args = ["handeye", "--images", str(images), "--poses", str(poses), "--board", CHARUCO, "--camera", "left_wrist",
            "--calibration", str(out)]
    assert _cli(args) == camera_cli.REFUSED
    assert "the implied board pose varies by" in capsys.readouterr().err
    assert load_calibration(out).cameras["left_wrist"].extrinsics is None

    poses.write_text(json.dumps({"views": {f"view_{i:03d}.png": {"joints": q.tolist()}
                                           for i, q in enumerate(views.joints[:-1])}}))
    assert _cli(args) == camera_cli.BAD_INPUT
    assert "images without a pose: ['view_011.png']" in capsys.readouterr().err

    assert _cli([*args[:-1], str(tmp_path / "other.toml")]) == camera_cli.BAD_INPUT
    assert "no calibration file" in capsys.readouterr().err


def test_handeye_refuses_motions_about_one_axis(link6_cam: np.ndarray) -> None:
    """Turning only joint6 (one axis) leaves the camera's offset along that axis undetermined."""
    world_board = np.eye(4)
    world_board[:3, 3] = [0.4, 0.3, 0.0]
    links, boards = [], []
    for angle in np.linspace(-0.8, 0.8, 10):
        link = np.eye(4)
        c, s = np.cos(angle), np.sin(angle)
        link[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
        link[:3, 3] = [0.3, 0.3, 0.35]
        links.append(link)
        boards.append(np.linalg.inv(link @ link6_cam) @ world_board)
    views = [BoardView(f"v{i}", b, 0.1) for i, b in enumerate(boards)]
    with pytest.raises(HandEyeError, match="rotation-axis spread 0.00"):
        calibrate_hand_eye(views, {v.image: link for v, link in zip(views, links, strict=True)}, HandEyeOptions())


# ---- board spec and the printable board ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("chess:9x6:0.025", "kind must be 'checkerboard' or 'charuco'"),
    ("checkerboard:9x6", "expected checkerboard:COLSxROWS:SQUARE_M"),
    ("checkerboard:9by6:0.025", "COLSxROWS must be two integers"),
    ("checkerboard:9x6:25", "SQUARE_M must be in metres"),
    ("charuco:7x5:0.04:0.05:DICT_4X4_50", "MARKER_M (0.05) must be smaller than SQUARE_M"),
    ("charuco:7x5:0.04:0.03:DICT_9X9_50", "unknown ArUco dictionary 'DICT_9X9_50'"),
    ("charuco:12x12:0.04:0.03:4X4_50", "needs 72 markers, DICT_4X4_50 has 50"),
])
def test_board_spec_errors_name_the_part(text: str, message: str) -> None:
    with pytest.raises(BoardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_board(text)


def test_printable_board_is_found_by_the_detector(tmp_path: Path) -> None:
    out = tmp_path / "board.png"
    assert _cli(["board", "--board", CHARUCO, "--out", str(out), "--px-per-square", "60"]) == 0
    found = detect_board(parse_board(CHARUCO), read_gray(out), out.name)
    assert not isinstance(found, str) and found.count == 24


def test_poses_file_accepts_joint_lists_joints_by_name_and_link_poses(tmp_path: Path) -> None:
    from calibration.handeye import link_poses, load_poses

    q = [0.1, 1.1, 0.9, -0.4, 0.2, 0.3]
    images = ["a.png", "b.png"]
    listed = load_poses(_poses_file(tmp_path, {"a.png": {"joints": q},
                                               "b.png": {"joints": dict(zip(LEFT_JOINTS, q, strict=True))}}))
    poses = link_poses(listed, images, "left_link6", LEFT_JOINTS)
    np.testing.assert_allclose(poses["a.png"], poses["b.png"])
    given = load_poses(_poses_file(tmp_path, {"a.png": {"link_pose": poses["a.png"].tolist()}}))
    np.testing.assert_array_equal(link_poses(given, ["a.png"], "left_link6", ())["a.png"], poses["a.png"])
    with pytest.raises(HandEyeError, match=r"views.b.png.joints: missing \['left_joint6'\]"):
        partial = load_poses(_poses_file(tmp_path, {"b.png": {"joints": dict(zip(LEFT_JOINTS[:5], q, strict=False))}}))
        link_poses(partial, ["b.png"], "left_link6", LEFT_JOINTS)
    with pytest.raises(HandEyeError, match="'left_link9' is not a body of the robot model"):
        link_poses(listed, images, "left_link9", LEFT_JOINTS)
    with pytest.raises(HandEyeError, match="link_pose: not a rigid transform"):
        load_poses(_poses_file(tmp_path, {"a.png": {"link_pose": (2 * np.eye(4)).tolist()}}))


def _poses_file(tmp_path: Path, views: dict[str, object]) -> Path:
    path = tmp_path / "poses.json"
    path.write_text(json.dumps({"views": views}))
    return path
