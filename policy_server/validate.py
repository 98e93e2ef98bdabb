"""Request validation: every InferRequest is checked against the PolicySpec before any policy sees it.

A failure raises `WireError` whose field names exactly what is wrong ("observation.images[top]: expected
240x320 (HxW), got 224x224") so the client can fix it; the server maps it to INVALID_ARGUMENT and keeps serving.
What passes comes out as an `ObservationInput` of plain, typed numpy values.

Image sizes: a policy whose preprocessing names a model input size and a fitting method (Pi0.5) fits frames of
any size itself, as its trainer did, so a stock client may send full frames; a policy without one (the dataset
policy: no model) takes frames only at its cameras' sizes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policy_norm.finite import dim_label, first_non_finite
from policy_norm.spec import PolicySpec
from protos import policy_pb2 as pb
from protos.codec import WireError, decode_image, dtype_name, tensor_to_numpy

# Largest image side accepted when the policy fits frames itself: above any camera, below a memory blow-up.
MAX_IMAGE_SIDE = 8192
# States: a joint reading this far outside the policy's joint limits is not a robot pose but a units, order or
# driver fault (degrees for radians, a swapped joint, an uninitialised 1e30), and the model would extrapolate
# from it. The margin is generous: calibration offsets and grippers read slightly outside their limits.
# Allowed: [lower - margin, upper + margin], margin = max(STATE_LIMIT_MARGIN, STATE_LIMIT_MARGIN_FRACTION * range).
STATE_LIMIT_MARGIN = 0.5  # robot units (rad for the arms' joints)
STATE_LIMIT_MARGIN_FRACTION = 0.1
# For joints without limits (and every policy without any): no joint of any robot reads beyond this.
STATE_ABS_BOUND = 1e4


@dataclass(frozen=True)
class RtcInput:
    """Real-time chunking inputs, validated: remainder [h, action_dim] float32 in robot units."""

    previous_chunk_remainder: npt.NDArray[np.float32]
    inference_delay_steps: int
    execution_horizon: int


@dataclass(frozen=True)
class ObservationInput:
    """A validated observation: what a policy receives."""

    images: Mapping[str, npt.NDArray[np.uint8]]
    image_timestamps: Mapping[str, float]
    state: npt.NDArray[np.float32]
    prompt: str
    timestamp: float
    episode_index: int
    step_index: int
    rtc: RtcInput | None = None


def _float32_tensor(tensor: pb.Tensor, field: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    if tensor.dtype != pb.DTYPE_FLOAT32:
        raise WireError(f"{field}.dtype", f"expected float32, got {dtype_name(tensor.dtype)}")
    arr = tensor_to_numpy(tensor, field)
    if arr.shape != shape:
        raise WireError(f"{field}.shape", f"expected {list(shape)}, got {list(arr.shape)}")
    return arr.astype(np.float32, copy=False)


def state_bounds(spec: PolicySpec, name: str) -> tuple[float, float]:
    """The accepted range of state dim `name`: its joint limits widened by the margin, else the absolute bound."""
    limit = spec.joint_limit(name)
    if limit is None:
        return -STATE_ABS_BOUND, STATE_ABS_BOUND
    lower, upper = limit
    margin = max(STATE_LIMIT_MARGIN, STATE_LIMIT_MARGIN_FRACTION * (upper - lower))
    return lower - margin, upper + margin


def validate_state(tensor: pb.Tensor, spec: PolicySpec) -> npt.NDArray[np.float32]:
    state = _float32_tensor(tensor, "observation.state", (spec.state_dim,))
    bad = first_non_finite(state)
    if bad is not None:
        raise WireError(f"observation.state{dim_label(spec.state_names, bad.dim)}", f"must be finite, got {bad.value}")
    if spec.joint_limits or bool(np.abs(state).max(initial=0.0) > STATE_ABS_BOUND):
        for i, name in enumerate(spec.state_names):
            lower, upper = state_bounds(spec, name)
            if not lower <= float(state[i]) <= upper:
                limit = spec.joint_limit(name)
                why = (f"joint limits [{limit[0]:g}, {limit[1]:g}] plus a margin of {upper - limit[1]:g}"
                       if limit is not None else "no joint reads beyond this")
                raise WireError(f"observation.state{dim_label(spec.state_names, i)}",
                                f"{float(state[i]):g} is outside [{lower:g}, {upper:g}] ({why}); check the "
                                "units (radians) and the joint order")
    return state


def policy_fits_images(spec: PolicySpec) -> bool:
    """Whether the policy fits frames of another size to its model input itself (see the module docstring)."""
    pre = spec.preprocessing
    return pre.image_resize != "none" and pre.image_height > 0 and pre.image_width > 0


def _check_image_size(msg: pb.Image, cam_height: int, cam_width: int, field: str, fits: bool) -> None:
    size = (msg.height, msg.width)
    if size == (cam_height, cam_width):
        return
    if not fits:
        raise WireError(
            field,
            f"expected {cam_height}x{cam_width} (HxW), got {msg.height}x{msg.width}; "
            "resize on the client (see PolicyMetadata.preprocessing)",
        )
    if not all(1 <= side <= MAX_IMAGE_SIDE for side in size):
        raise WireError(f"{field}.height/width", f"each side must be 1..{MAX_IMAGE_SIDE} (the server fits the frame "
                                                 f"to {cam_height}x{cam_width}), got {msg.height}x{msg.width}")


def validate_images(
    images: Mapping[str, pb.Image], spec: PolicySpec
) -> tuple[dict[str, npt.NDArray[np.uint8]], dict[str, float]]:
    expected = [c.name for c in spec.cameras]
    fits = policy_fits_images(spec)
    for name in images:
        if spec.camera(name) is None:
            raise WireError(f"observation.images[{name}]", f"unknown camera; expected names {expected}")
    rgb: dict[str, npt.NDArray[np.uint8]] = {}
    stamps: dict[str, float] = {}
    for cam in spec.cameras:
        field = f"observation.images[{cam.name}]"
        if cam.name not in images:
            if cam.required:
                raise WireError(field, f"required camera is missing; sent {sorted(images)}")
            continue
        msg = images[cam.name]
        _check_image_size(msg, cam.height, cam.width, field, fits)
        decoded = decode_image(msg, field)
        rgb[cam.name] = decoded.rgb
        stamps[cam.name] = decoded.capture_timestamp
    return rgb, stamps


def validate_rtc(rtc: pb.RealTimeChunking, spec: PolicySpec) -> RtcInput:
    field = "observation.rtc"
    if not spec.supports_rtc:
        raise WireError(field, f"policy '{spec.policy_type}' does not support real-time chunking; leave it unset")
    rem = rtc.previous_chunk_remainder
    if rem.dtype != pb.DTYPE_FLOAT32:
        raise WireError(f"{field}.previous_chunk_remainder.dtype", f"expected float32, got {dtype_name(rem.dtype)}")
    arr = tensor_to_numpy(rem, f"{field}.previous_chunk_remainder").astype(np.float32, copy=False)
    if arr.ndim != 2 or arr.shape[1] != spec.action_dim or arr.shape[0] > spec.action_horizon:
        raise WireError(
            f"{field}.previous_chunk_remainder.shape",
            f"expected [h <= {spec.action_horizon}, {spec.action_dim}], got {list(arr.shape)}",
        )
    bad = first_non_finite(arr)
    if bad is not None:
        raise WireError(f"{field}.previous_chunk_remainder[{bad.index[0]}, {bad.index[1]}]", "must be finite")
    delay = int(rtc.inference_delay_steps)
    if not 0 <= delay < spec.action_horizon:
        raise WireError(f"{field}.inference_delay_steps", f"expected 0..{spec.action_horizon - 1}, got {delay}")
    horizon = int(rtc.execution_horizon)
    if not 0 <= horizon <= spec.action_horizon:
        raise WireError(f"{field}.execution_horizon", f"expected 0..{spec.action_horizon}, got {horizon}")
    return RtcInput(previous_chunk_remainder=arr, inference_delay_steps=delay, execution_horizon=horizon)


def validate_request(request: pb.InferRequest, spec: PolicySpec) -> ObservationInput:
    """Check one request against the spec; raise WireError naming the first offending field."""
    if not request.HasField("observation"):
        raise WireError("observation", "required")
    obs = request.observation
    if not obs.HasField("state"):
        raise WireError(
            "observation.state", f"required: float32 [{spec.state_dim}] ordered as {list(spec.state_names)}"
        )
    state = validate_state(obs.state, spec)
    images, stamps = validate_images(obs.images, spec)
    if len(obs.prompt) > spec.max_prompt_chars:
        raise WireError("observation.prompt", f"{len(obs.prompt)} characters exceeds {spec.max_prompt_chars}")
    if spec.require_prompt and not obs.prompt.strip():
        raise WireError("observation.prompt", "required by this policy (the task instruction)")
    if not (math.isfinite(obs.timestamp) and obs.timestamp >= 0):
        raise WireError("observation.timestamp", f"must be finite and >= 0, got {obs.timestamp}")
    for name in ("episode_index", "step_index"):
        if getattr(obs, name) < 0:
            raise WireError(f"observation.{name}", f"must be >= 0, got {getattr(obs, name)}")
    rtc = validate_rtc(obs.rtc, spec) if obs.HasField("rtc") else None
    return ObservationInput(
        images=images,
        image_timestamps=stamps,
        state=state,
        prompt=obs.prompt,
        timestamp=float(obs.timestamp),
        episode_index=int(obs.episode_index),
        step_index=int(obs.step_index),
        rtc=rtc,
    )
