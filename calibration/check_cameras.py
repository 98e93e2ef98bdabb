"""Camera checks of the rig against its dataset: names, resolutions (config and calibration), frame rates.

Why: the policy is fed the rig's cameras by name; a dataset camera the rig lacks means the client cannot
build an observation at all (error). A different resolution with the same aspect ratio is resized to the
model's input like the training frames were, but detail and blur differ from training (warning); a different
aspect ratio changes how `resize_with_pad` pads, so the scene's geometry in the model's input differs from
everything the policy saw (error). Intrinsics measured at another size than the frames (calibration camera
section) do not describe those frames (warning). A camera configured slower than the dataset's fps repeats
frames the policy expects to change (warning).
"""

from __future__ import annotations

from calibration.check_inputs import DataSummary, RigSpec
from replay.doctor.findings import Finding

ASPECT_TOLERANCE = 0.01  # relative difference of width / height treated as the same aspect ratio


def _size(width: int, height: int) -> str:
    return f"{width}x{height}"


def check_cameras(rig: RigSpec, data: DataSummary) -> list[Finding]:
    out: list[Finding] = []
    rig_names = [c.name for c in rig.cameras]
    for cam in data.cameras:
        where = f"camera {cam.name}"
        have = rig.camera(cam.name)
        if have is None:
            fix = (f"add a [[camera]] table named {cam.name!r} to {rig.config.source or 'the robot config'}"
                   if rig.robot_kind == "yam" else "the simulated rig cannot provide it")
            out.append(Finding("error", "camera_missing", where,
                               f"the dataset has camera {cam.name!r} ({_size(cam.width, cam.height)}) but the "
                               f"{rig.robot_kind} rig has no camera of that name (rig cameras: {rig_names}); {fix}"))
            continue
        if have.width is None or have.height is None:
            out.append(Finding("info", "camera_resolution_unknown", where,
                               f"the rig's {cam.name} size is left to the camera's default (no width/height in its "
                               f"[[camera]] table, no calibration section); the dataset's is "
                               f"{_size(cam.width, cam.height)}"))
        elif (have.width, have.height) != (cam.width, cam.height):
            same_aspect = abs(have.width / have.height - cam.width / cam.height) <= \
                ASPECT_TOLERANCE * cam.width / cam.height
            severity, effect = ("warning", "frames are resized to the model's input as in training, but their "
                                "detail differs") if same_aspect else \
                ("error", "the aspect ratio differs, so resize_with_pad pads the frames differently from training")
            out.append(Finding(severity, "camera_resolution", where,
                               f"the rig captures {cam.name} at {_size(have.width, have.height)} (from "
                               f"{have.source}), the dataset has {_size(cam.width, cam.height)}: {effect}"))
        if have.fps is not None and have.fps < data.fps * 0.99:
            out.append(Finding("warning", "camera_fps", where,
                               f"{cam.name} is configured at {have.fps:g} fps, below the dataset's {data.fps:g} fps: "
                               f"observations repeat frames"))
        cal = rig.calibration.cameras.get(cam.name) if rig.calibration is not None else None
        if cal is not None and have.source != "calibration" and (cal.width, cal.height) != (cam.width, cam.height):
            out.append(Finding("warning", "calibration_camera_size", f"calibration camera.{cam.name}",
                               f"intrinsics were measured at {_size(cal.width, cal.height)}, the dataset's frames are "
                               f"{_size(cam.width, cam.height)}; they do not describe those frames"))
    data_names = {c.name for c in data.cameras}
    for name in rig_names:
        if name not in data_names:
            out.append(Finding("info", "camera_unused", f"camera {name}",
                               f"the rig has camera {name!r}, the dataset does not use it"))
    return out
