"""Where chunks to compare with a dataset come from: a running policy server, or a checkpoint loaded here.

Why two sources behind one interface: the server path checks the whole deploy path (wire, validation,
server-side normalization) exactly as the robot client calls it (`GrpcPolicy`, which also resizes images to
the server's camera sizes); the local path needs no server and hands the same request to the server's own
request handling in-process (`InferenceCore`: validation against the policy's spec, then `Pi05Policy`), with
the images fitted to the model's size by the policy's input transform, as the client would fit them. A frame
the server would refuse is refused here with the same field and message. The doctor and the oracle both ask these
sources, so a policy is asked the same way whichever tool reports on it. Heavy imports (gRPC, torch) happen
only when a source is built, so data-only tools stay fast.

Requests go through `infer_batch`: the server has no batch RPC yet, so the server source answers a batch one
request at a time over one persistent stream (no per-call setup); a batch RPC, or a batched forward pass of
the local model, replaces the loop inside `infer_batch` without the callers changing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from replay.oracle.norm import NormalizedView

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


@dataclass(frozen=True)
class ChunkAnswer:
    """A source's answer to one observation: the chunk [H, A] (source action order) and its warning codes,
    or the error that stopped it (one refused frame must not end a sweep, so errors are data here)."""

    chunk: F32 | None
    warnings: tuple[str, ...] = ()
    error: str | None = None


class ChunkSource(Protocol):
    """Answers observations with action chunks [H, A] in robot units (the source's action order)."""

    description: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[str, ...]

    def infer(self, obs: FrameObservation) -> tuple[F32, list[str]]:
        """The chunk and the codes of the warnings that came with it; raises when the policy refuses."""
        ...

    def infer_batch(self, batch: Sequence[FrameObservation]) -> list[ChunkAnswer]:
        """One answer per observation, in order; a failed observation gives an answer with `error` set."""
        ...

    def normalized_view(self) -> tuple[NormalizedView | None, str]:
        """The policy's own action normalization (robot units -> model space), or None, and a line saying
        where it came from or why there is none."""
        ...

    def close(self) -> None: ...


def answer_one_by_one(infer: Callable[[FrameObservation], tuple[F32, list[str]]],
                      batch: Sequence[FrameObservation]) -> list[ChunkAnswer]:
    """The batch loop for sources without a batch call: each request on its own, errors kept per frame."""
    answers: list[ChunkAnswer] = []
    for obs in batch:
        try:
            chunk, codes = infer(obs)
        except Exception as err:  # a refused or failed request is reported for its frame, the sweep goes on
            answers.append(ChunkAnswer(None, (), f"{type(err).__name__}: {err}"))
            continue
        answers.append(ChunkAnswer(chunk, tuple(codes)))
    return answers


def request_dict(obs: FrameObservation, noise_seed: int | None,
                 images: Mapping[str, U8] | None = None) -> dict[str, Any]:
    """`obs` in the client dict convention (`protos.dicts`), as both sources send it; `images` replaces its
    images (fitted ones)."""
    request: dict[str, Any] = {
        "state": obs.state, "images": dict(obs.images if images is None else images), "prompt": obs.prompt,
        "timestamp": obs.timestamp, "episode_index": obs.episode_index, "step_index": obs.step_index,
    }
    if noise_seed is not None:
        request["noise_seed"] = noise_seed
    return request


class ServerSource:
    """A policy server at HOST:PORT, called through the robot client's GrpcPolicy (streaming by default)."""

    def __init__(self, target: str, noise_seed: int | None, timeout_s: float = 30.0, connect_timeout_s: float = 10.0,
                 streaming: bool = True) -> None:
        from robot_client.policy_client import GrpcPolicy, GrpcPolicyConfig

        self.target = target
        self._client = GrpcPolicy(GrpcPolicyConfig(target=target, timeout_s=timeout_s,
                                                   connect_timeout_s=connect_timeout_s, retries=1,
                                                   streaming=streaming))
        md = self._client.metadata
        self.metadata = md
        self.description = f"server {target} ({md.policy_type} {md.model_id})"
        self.state_names = tuple(md.state_names)
        self.action_names = tuple(md.action_names)
        self.cameras = tuple(c.name for c in md.cameras)
        self._noise_seed = noise_seed

    def infer(self, obs: FrameObservation) -> tuple[F32, list[str]]:
        from protos.dicts import response_to_dict

        request = request_dict(obs, self._noise_seed)
        # build_request + infer_request is GrpcPolicy.infer without its per-warning log line: callers count the
        # warnings (a padded chunk at every episode end is expected) instead of printing each one.
        response = response_to_dict(self._client.infer_request(self._client.build_request(request)))
        return np.asarray(response["actions"], dtype=np.float32), [str(w["code"]) for w in response["warnings"]]

    def infer_batch(self, batch: Sequence[FrameObservation]) -> list[ChunkAnswer]:
        return answer_one_by_one(self.infer, batch)

    def normalized_view(self) -> tuple[NormalizedView | None, str]:
        from replay.oracle.norm import view_from_metadata

        return view_from_metadata(self.metadata, f"server {self.target}")

    def close(self) -> None:
        self._client.close()


class LocalModelSource:
    """A Pi0.5 checkpoint loaded in this process (`Pi05Policy`), asked through the server's request handling
    (`InferenceCore`): each request is validated against the policy's spec exactly as a served one is."""

    def __init__(self, checkpoint: Path, noise_seed: int | None, device: str = "cpu") -> None:
        from policy_server.core import InferenceCore
        from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
        from policy_server.server import DEFAULT_MAX_REQUEST_BYTES

        self._policy = Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device=device, warmup=False))
        self._core = InferenceCore(self._policy, max_request_bytes=DEFAULT_MAX_REQUEST_BYTES)
        spec = self._policy.spec
        self.checkpoint = checkpoint
        self.description = f"local model {checkpoint} ({spec.model_id}, {device})"
        self.state_names = tuple(spec.state_names)
        self.action_names = tuple(spec.action_names)
        self.cameras = tuple(c.name for c in spec.cameras)
        self._noise_seed = noise_seed

    def _images(self, images: Mapping[str, U8]) -> dict[str, U8]:
        """The client's preprocessing: the policy's cameras fitted to the model's size by its input transform
        (`fit_image` with the policy's resolved method, as `GrpcPolicy` fits with the metadata's; uint8, so for
        resize_with_pad_torch the robot's rounded frames); other cameras are sent as they are, for validation."""
        transform = self._policy.transform
        return {name: transform.fit(rgb, name) if name in transform.cameras else rgb for name, rgb in images.items()}

    def infer(self, obs: FrameObservation) -> tuple[F32, list[str]]:
        """Raises protos.codec.WireError naming the field for a frame the server would refuse."""
        from protos.dicts import request_from_dict, response_to_dict

        request = request_from_dict(request_dict(obs, self._noise_seed, self._images(obs.images)))
        response = response_to_dict(self._core.infer(request))
        return np.asarray(response["actions"], dtype=np.float32), [str(w["code"]) for w in response["warnings"]]

    def infer_batch(self, batch: Sequence[FrameObservation]) -> list[ChunkAnswer]:
        return answer_one_by_one(self.infer, batch)

    def normalized_view(self) -> tuple[NormalizedView | None, str]:
        from replay.oracle.norm import view_from_pipeline

        return view_from_pipeline(self._policy.pipeline, f"checkpoint {self.checkpoint}")

    def close(self) -> None:
        self._core.close()
        self._policy.close()


def open_policy_source(server: str | None = None, checkpoint: Path | None = None, *, noise_seed: int | None = 0,
                       device: str = "cpu", streaming: bool = True) -> ChunkSource:
    """A server source for `server` (HOST:PORT) or a local source for `checkpoint`; exactly one must be given."""
    if (server is None) == (checkpoint is None):
        raise ValueError("give exactly one policy: server (HOST:PORT) or checkpoint (a Pi0.5 checkpoint dir)")
    if server is not None:
        return ServerSource(server, noise_seed, streaming=streaming)
    assert checkpoint is not None
    return LocalModelSource(checkpoint, noise_seed, device)
