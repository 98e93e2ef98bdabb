"""Where the doctor's reconstruction chunks come from: a running policy server, or a checkpoint loaded here.

Why two sources behind one interface: the server path checks the whole deploy path (wire, validation,
server-side normalization) exactly as the robot client calls it (`GrpcPolicy`, which also resizes images to
the server's camera sizes); the local path needs no server and runs `Pi05Policy.infer` in-process, with the
images resized to the policy's camera size the way the client would. Heavy imports (gRPC, torch) happen only
when a source is built, so the data-only doctor stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FrameObservation:
    """One dataset frame as a policy observation (state in the source's state order)."""

    episode_index: int
    step_index: int
    timestamp: float
    state: F32
    prompt: str
    images: Mapping[str, U8]


class ChunkSource(Protocol):
    """Answers an observation with an action chunk [H, A] in robot units (the source's action order)."""

    description: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[str, ...]

    def infer(self, obs: FrameObservation) -> tuple[F32, list[str]]:
        """The chunk and the codes of the warnings that came with it."""
        ...

    def close(self) -> None: ...


class ServerSource:
    """A policy server at HOST:PORT, called through the robot client's GrpcPolicy."""

    def __init__(self, target: str, noise_seed: int, timeout_s: float = 30.0, connect_timeout_s: float = 10.0) -> None:
        from robot_client.policy_client import GrpcPolicy, GrpcPolicyConfig

        self._client = GrpcPolicy(GrpcPolicyConfig(target=target, timeout_s=timeout_s,
                                                   connect_timeout_s=connect_timeout_s, retries=1))
        md = self._client.metadata
        self.description = f"server {target} ({md.policy_type} {md.model_id})"
        self.state_names = tuple(md.state_names)
        self.action_names = tuple(md.action_names)
        self.cameras = tuple(c.name for c in md.cameras)
        self._noise_seed = noise_seed

    def infer(self, obs: FrameObservation) -> tuple[F32, list[str]]:
        from protos.dicts import response_to_dict

        request: dict[str, Any] = {
            "state": obs.state, "images": dict(obs.images), "prompt": obs.prompt, "timestamp": obs.timestamp,
            "episode_index": obs.episode_index, "step_index": obs.step_index, "noise_seed": self._noise_seed,
        }
        # build_request + infer_request is GrpcPolicy.infer without its per-warning log line: the doctor counts
        # the warnings (a padded chunk at every episode end is expected) instead of printing each one.
        response = response_to_dict(self._client.infer_request(self._client.build_request(request)))
        return np.asarray(response["actions"], dtype=np.float32), [str(w["code"]) for w in response["warnings"]]

    def close(self) -> None:
        self._client.close()


class LocalModelSource:
    """A Pi0.5 checkpoint loaded in this process (`Pi05Policy`)."""

    def __init__(self, checkpoint: Path, noise_seed: int, device: str = "cpu") -> None:
        from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions

        self._policy = Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device=device, warmup=False))
        spec = self._policy.spec
        self.description = f"local model {checkpoint} ({spec.model_id}, {device})"
        self.state_names = tuple(spec.state_names)
        self.action_names = tuple(spec.action_names)
        self.cameras = tuple(c.name for c in spec.cameras)
        self._sizes = {c.name: (c.height, c.width) for c in spec.cameras}
        self._resize = spec.preprocessing.image_resize or "resize_with_pad"
        self._noise_seed = noise_seed

    def _image(self, name: str, rgb: U8) -> U8:
        """The client's preprocessing (GrpcPolicy.prepare_images): resize to the policy's size when it differs."""
        from robot_client.cameras.image_ops import fit_image

        target = self._sizes.get(name)
        return rgb if target is None else fit_image(rgb, target[0], target[1], self._resize)

    def infer(self, obs: FrameObservation) -> tuple[F32, list[str]]:
        from policy_server.validate import ObservationInput

        observation = ObservationInput(
            images={name: self._image(name, rgb) for name, rgb in obs.images.items()}, image_timestamps={},
            state=obs.state, prompt=obs.prompt, timestamp=obs.timestamp, episode_index=obs.episode_index,
            step_index=obs.step_index,
        )
        out = self._policy.infer(observation, noise_seed=self._noise_seed)
        return np.asarray(out.actions, dtype=np.float32), [w.code for w in out.warnings]

    def close(self) -> None:
        self._policy.close()
