"""Synthetic board images from a *known* camera, for the camera calibration tests.

Rendering is exact for OpenCV's camera model: every output pixel (2x2 sub-samples) is undistorted to its ray
with the true K and distortion (`cv2.undistortPoints`, iterated to 1e-12 and checked by re-projection), the
ray is intersected with the board plane, and the board image is sampled there. So the corners of the image
are where `cv2.projectPoints` puts them, up to the sub-sampling, a light blur and sensor noise: a calibration
that recovers K from these images recovers it for the right reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from calibration.board import BoardSpec, board_image

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
PX_PER_SQUARE = 120
MARGIN_SQUARES = 0.5
SUBSAMPLES = 2


@dataclass(frozen=True, eq=False)
class SynthCamera:
    width: int
    height: int
    camera_matrix: F64
    distortion: F64
    _rays: list[F64] = field(default_factory=list)  # cached per-sub-sample rays [H, W, 3]

    def rays(self) -> list[F64]:
        """Unit-depth rays (x, y, 1) of every pixel's sub-samples, from the true distortion model."""
        if self._rays:
            return self._rays
        ys, xs = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES - 0.5
        criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
        for dy in offsets:
            for dx in offsets:
                pixels = np.stack([xs + dx, ys + dy], axis=-1).reshape(-1, 1, 2)
                normal = cv2.undistortPoints(pixels, self.camera_matrix, self.distortion, criteria=criteria)
                back, _ = cv2.projectPoints(np.concatenate([normal, np.ones_like(normal[..., :1])], axis=-1),
                                            np.zeros(3), np.zeros(3), self.camera_matrix, self.distortion)
                assert np.abs(back - pixels).max() < 1e-3, "undistortion did not converge: lower the distortion"
                ray = np.concatenate([normal.reshape(self.height, self.width, 2),
                                      np.ones((self.height, self.width, 1))], axis=-1)
                self._rays.append(ray)
        return self._rays

    def project(self, points: F64, cam_board: F64) -> F64:
        """Pixel positions [N, 2] of board points [N, 3] for a board pose in the camera."""
        rvec = cv2.Rodrigues(cam_board[:3, :3])[0]
        out, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, cam_board[:3, 3], self.camera_matrix,
                                   self.distortion)
        return np.asarray(out, dtype=np.float64).reshape(-1, 2)


class BoardRenderer:
    """Draws one board through one camera at given board poses."""

    def __init__(self, spec: BoardSpec) -> None:
        self.spec = spec
        self.texture = board_image(spec, PX_PER_SQUARE, MARGIN_SQUARES).astype(np.float32)
        self.px_per_m = PX_PER_SQUARE / spec.square_m
        self.margin_m = MARGIN_SQUARES * spec.square_m

    def outline(self) -> F64:
        """Board image corners (with the margin) in the board frame, for visibility tests."""
        w = self.spec.cols * self.spec.square_m + self.margin_m
        h = self.spec.rows * self.spec.square_m + self.margin_m
        m = -self.margin_m
        return np.array([[m, m, 0], [w, m, 0], [w, h, 0], [m, h, 0]], dtype=np.float64)

    def corners(self) -> F64:
        """Inner corners in the rendering frame (origin at the outer top-left corner of the squares)."""
        s = self.spec.square_m
        ys, xs = np.mgrid[1:self.spec.rows, 1:self.spec.cols]
        return np.stack([xs.ravel() * s, ys.ravel() * s, np.zeros(xs.size)], axis=1)

    def render(self, camera: SynthCamera, cam_board: F64, rng: np.random.Generator, blur_sigma: float = 0.5,
               noise: float = 1.5) -> U8:
        rotation, t = cam_board[:3, :3], cam_board[:3, 3]
        normal = rotation[:, 2]
        total = np.zeros((camera.height, camera.width), dtype=np.float32)
        for ray in camera.rays():
            denom = ray @ normal
            depth = np.where(np.abs(denom) > 1e-9, (normal @ t) / np.where(denom == 0, 1, denom), -1.0)
            points = ray * depth[..., None] - t
            board = points @ rotation  # R^T (p - t), row-wise
            map_x = ((board[..., 0] + self.margin_m) * self.px_per_m - 0.5).astype(np.float32)
            map_y = ((board[..., 1] + self.margin_m) * self.px_per_m - 0.5).astype(np.float32)
            map_x[depth <= 0] = -1e4
            total += cv2.remap(self.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=110.0)
        image = total / len(camera.rays())
        if blur_sigma > 0:
            image = np.asarray(cv2.GaussianBlur(image, (0, 0), blur_sigma), dtype=np.float32)
        image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
        return np.asarray(np.clip(np.round(image), 0, 255), dtype=np.uint8)


def rotation_about(axis: F64, angle: float) -> F64:
    rvec = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis) * angle
    return np.asarray(cv2.Rodrigues(rvec)[0], dtype=np.float64)


def random_board_poses(camera: SynthCamera, renderer: BoardRenderer, count: int, rng: np.random.Generator,
                       distance: tuple[float, float] = (0.3, 0.55), max_tilt_deg: float = 40.0,
                       whole_board: bool = True) -> list[F64]:
    """Board poses in the camera that put the board at varied distances, tilts and image positions: the whole
    board (with its white margin) in view when `whole_board`, else at least 60% of the corners."""
    spec = renderer.spec
    centre = np.array([spec.cols * spec.square_m / 2, spec.rows * spec.square_m / 2, 0.0])
    k_inv = np.linalg.inv(camera.camera_matrix)
    poses: list[F64] = []
    while len(poses) < count:
        in_plane = rotation_about(np.array([0.0, 0.0, 1.0]), rng.uniform(-0.4, 0.4))
        tilt_axis = np.array([*rng.normal(size=2), 0.0])
        tilt = rotation_about(tilt_axis, np.radians(rng.uniform(10.0, max_tilt_deg)))
        rotation = tilt @ in_plane
        target = np.array([rng.uniform(0.15, 0.85) * camera.width, rng.uniform(0.15, 0.85) * camera.height, 1.0])
        depth = rng.uniform(*distance)
        position = (k_inv @ target) * depth
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:3, 3] = position - rotation @ centre
        if visible(camera, renderer, pose, whole_board):
            poses.append(pose)
    return poses


def visible(camera: SynthCamera, renderer: BoardRenderer, cam_board: F64, whole_board: bool) -> bool:
    if cam_board[2, 2] < np.cos(np.radians(65.0)):  # seen too obliquely (or from behind)
        return False
    points = renderer.outline() if whole_board else renderer.corners()
    world = points @ cam_board[:3, :3].T + cam_board[:3, 3]
    if np.any(world[:, 2] < 0.05):
        return False
    pixels = camera.project(points, cam_board)
    inside = ((pixels[:, 0] > 2) & (pixels[:, 0] < camera.width - 3) & (pixels[:, 1] > 2)
              & (pixels[:, 1] < camera.height - 3))
    return bool(inside.all()) if whole_board else bool(inside.mean() >= 0.6)


# ---- a wrist camera on the simulated YAM ------------------------------------------------------------------------

LEFT_JOINTS = tuple(f"left_joint{i}" for i in range(1, 7))
# Arm pose with the left wrist camera looking down at the table from ~0.32 m.
NOMINAL_JOINTS = np.array([0.0, 1.2, 1.0, -0.5, 0.0, 0.0])
JOINT_SPREAD = np.array([0.3, 0.2, 0.2, 0.35, 0.35, 0.5])  # rad, +- around NOMINAL_JOINTS


def sim_wrist_camera_in_link6() -> F64:
    """The MJCF's left wrist camera as a pose in left_link6, in OpenCV's optical frame (MuJoCo cameras look
    along -z with y up; OpenCV's along +z with y down: flip y and z)."""
    import mujoco

    from calibration.handeye import pose_matrix
    from replay.view.kinematics import DEFAULT_MODEL

    model = mujoco.MjModel.from_xml_path(str(DEFAULT_MODEL))
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "left_wrist")
    wxyz = np.asarray(model.cam_quat[cam], dtype=np.float64)
    pose = pose_matrix(np.asarray(model.cam_pos[cam], dtype=np.float64), np.r_[wxyz[1:], wxyz[:1]])
    pose[:3, :3] = pose[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    return pose


@dataclass(frozen=True)
class ArmViews:
    joints: list[F64]  # per view, LEFT_JOINTS order
    base_link6: list[F64]  # FK of those joints
    cam_board: list[F64]  # the board seen from the wrist camera
    world_board: F64


def arm_views(camera: SynthCamera, renderer: BoardRenderer, link6_cam: F64, count: int,
              rng: np.random.Generator) -> ArmViews:
    """Joint vectors around NOMINAL_JOINTS whose wrist camera sees at least 60% of a board lying flat on the
    table where the nominal camera's optical axis meets it; link poses from the real FK (replay.view.kinematics)."""
    from calibration.handeye import pose_matrix
    from replay.view.kinematics import RobotKinematics

    kinematics = RobotKinematics(LEFT_JOINTS)
    index = kinematics.bodies.index("left_link6")

    def link6(q: F64) -> F64:
        pos, quat = kinematics.body_poses(q)
        return pose_matrix(pos[index], quat[index])

    nominal = link6(NOMINAL_JOINTS) @ link6_cam
    hit = nominal[:3, 3] + nominal[:3, 2] * (nominal[2, 3] / -nominal[2, 2])  # optical axis meets z = 0
    rotation = np.column_stack([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # board z into the table
    spec = renderer.spec
    centre = np.array([spec.cols * spec.square_m / 2, spec.rows * spec.square_m / 2, 0.0])
    world_board = np.eye(4)
    world_board[:3, :3] = rotation
    world_board[:3, 3] = hit - rotation @ centre
    views = ArmViews([], [], [], world_board)
    while len(views.joints) < count:
        q = NOMINAL_JOINTS + rng.uniform(-1.0, 1.0, 6) * JOINT_SPREAD
        link = link6(q)
        cam_board = np.linalg.inv(link @ link6_cam) @ world_board
        if visible(camera, renderer, cam_board, whole_board=False):
            views.joints.append(q)
            views.base_link6.append(link)
            views.cam_board.append(cam_board)
    return views
