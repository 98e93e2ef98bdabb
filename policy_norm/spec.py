"""What a policy promises about its inputs and outputs (PolicySpec), and its wire form (PolicyMetadata).

The server validates every request against this spec before a policy sees it, and clients read it to prepare
observations (camera names and sizes, joint order, control rate), so it is the one place those facts live.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from policy_norm.image_fit import RESIZE_METHODS
from policy_norm.modes import NormMode, parse_mode
from protos import PROTOCOL_VERSION
from protos import policy_pb2 as pb


class SpecError(ValueError):
    """A policy spec is inconsistent (e.g. mask length differs from action_dim). Raised at startup."""


@dataclass(frozen=True)
class CameraSpec:
    name: str
    height: int
    width: int
    required: bool = True


@dataclass(frozen=True)
class FeatureStatsSpec:
    """Per-dimension statistics of one feature (state or actions); absent statistics are empty tuples."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    q01: tuple[float, ...] = ()
    q99: tuple[float, ...] = ()
    min: tuple[float, ...] = ()
    max: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v] for k, v in vars(self).items() if v}

    def to_proto(self) -> pb.FeatureStats:
        return pb.FeatureStats(**self.as_dict())


@dataclass(frozen=True)
class NormStatsSpec:
    mode: NormMode
    state: FeatureStatsSpec
    actions: FeatureStatsSpec

    def __post_init__(self) -> None:
        # Checked (and a string made the enum) here, so every spec holding these stats has a known mode.
        object.__setattr__(self, "mode", parse_mode(self.mode, "norm_stats.mode", SpecError))

    def digest(self) -> str:
        """sha256 of the canonical JSON of the stats: lets a client check it runs against the stats it expects."""
        canonical = json.dumps(
            {"mode": self.mode, "state": self.state.as_dict(), "actions": self.actions.as_dict()},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_proto(self) -> pb.NormStats:
        return pb.NormStats(
            mode=self.mode, state=self.state.to_proto(), actions=self.actions.to_proto(), digest=self.digest()
        )


@dataclass(frozen=True)
class PreprocessingSpec:
    image_resize: str = "none"
    image_height: int = 0
    image_width: int = 0
    state_bins: int = 0


@dataclass(frozen=True)
class PolicySpec:
    """Inputs a policy accepts and outputs it produces. Validated once, at construction."""

    policy_type: str
    model_id: str
    weight_hash: str
    action_horizon: int
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[CameraSpec, ...]
    control_fps: float
    action_delta_mask: tuple[bool, ...]
    action_gripper_mask: tuple[bool, ...]
    norm_stats: NormStatsSpec | None = None
    preprocessing: PreprocessingSpec = field(default_factory=PreprocessingSpec)
    supports_rtc: bool = False
    known_prompts: tuple[str, ...] = ()
    require_prompt: bool = False
    max_prompt_chars: int = 2000
    # (name, lower, upper) per limited joint, in robot units: the server refuses states far outside them
    # (policy_server.validate). Empty = no limits known (only the absolute sanity bound applies).
    joint_limits: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.action_horizon <= 0:
            raise SpecError(f"action_horizon must be > 0, got {self.action_horizon}")
        if not self.state_names or not self.action_names:
            raise SpecError("state_names and action_names must be non-empty")
        for label, names in (("state_names", self.state_names), ("action_names", self.action_names)):
            if len(set(names)) != len(names):
                raise SpecError(f"{label} has duplicates: {list(names)}")
        for label, mask in (("action_delta_mask", self.action_delta_mask),
                            ("action_gripper_mask", self.action_gripper_mask)):
            if len(mask) != self.action_dim:
                raise SpecError(f"{label} has {len(mask)} entries, action_dim is {self.action_dim}")
        camera_names = [c.name for c in self.cameras]
        if len(set(camera_names)) != len(camera_names):
            raise SpecError(f"camera names have duplicates: {camera_names}")
        for cam in self.cameras:
            if cam.height <= 0 or cam.width <= 0:
                raise SpecError(f"camera '{cam.name}' size must be positive, got {cam.height}x{cam.width}")
        if not (np.isfinite(self.control_fps) and self.control_fps > 0):
            raise SpecError(f"control_fps must be positive, got {self.control_fps}")
        for name, lower, upper in self.joint_limits:
            if not (np.isfinite(lower) and np.isfinite(upper) and upper > lower):
                raise SpecError(f"joint_limits.{name}: expected finite lower < upper, got [{lower}, {upper}]")
        if self.preprocessing.image_resize not in RESIZE_METHODS:
            raise SpecError(f"preprocessing.image_resize must be one of {list(RESIZE_METHODS)}, "
                            f"got {self.preprocessing.image_resize!r}")

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def joint_limit(self, name: str) -> tuple[float, float] | None:
        """(lower, upper) of joint `name`, or None when the policy states no limit for it."""
        for joint, lower, upper in self.joint_limits:
            if joint == name:
                return lower, upper
        return None

    def camera(self, name: str) -> CameraSpec | None:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        return None

    def to_proto(self, *, server_version: str, max_request_bytes: int) -> pb.PolicyMetadata:
        return pb.PolicyMetadata(
            policy_type=self.policy_type,
            model_id=self.model_id,
            weight_hash=self.weight_hash,
            action_horizon=self.action_horizon,
            action_dim=self.action_dim,
            state_dim=self.state_dim,
            action_names=list(self.action_names),
            state_names=list(self.state_names),
            cameras=[
                pb.CameraSpec(name=c.name, height=c.height, width=c.width, required=c.required)
                for c in self.cameras
            ],
            control_fps=self.control_fps,
            action_delta_mask=list(self.action_delta_mask),
            action_gripper_mask=list(self.action_gripper_mask),
            norm_stats=self.norm_stats.to_proto() if self.norm_stats else pb.NormStats(mode=NormMode.IDENTITY),
            preprocessing=pb.PreprocessingSpec(
                image_resize=self.preprocessing.image_resize,
                image_height=self.preprocessing.image_height,
                image_width=self.preprocessing.image_width,
                state_bins=self.preprocessing.state_bins,
            ),
            server_version=server_version,
            supports_rtc=self.supports_rtc,
            max_request_bytes=max_request_bytes,
            known_prompts=list(self.known_prompts),
            protocol_version=PROTOCOL_VERSION,
        )


def gripper_mask(names: Sequence[str]) -> tuple[bool, ...]:
    """True for dimensions whose name says they are a gripper (e.g. 'left_gripper')."""
    return tuple("gripper" in n.lower() for n in names)
