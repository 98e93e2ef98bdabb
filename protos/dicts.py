"""The dict form of observations and responses, as openpi-style clients use them, and its proto form.

openpi clients call `policy.infer(obs_dict) -> dict`. Both our gRPC client (`robot_client.GrpcPolicy`) and the
openpi-compatible websocket endpoint accept the same dict convention and convert it here, so the two wires
accept exactly the same observations:

    {
      "state": float32/float64 [state_dim],           # or "observation.state"
      "images": {camera: uint8 [H, W, 3] RGB},        # or "observation.images.<camera>" keys; CHW [3, H, W] is
                                                      #   transposed (openpi ALOHA sends CHW)
      "prompt": str,                                  # or "task"
      "timestamp": float, "episode_index": int, "step_index": int,       # optional
      "image_timestamps": {camera: float},                               # optional
      "rtc": {"previous_chunk_remainder": [h, D], "inference_delay_steps": int, "execution_horizon": int},
      "noise_seed": int,                                                 # optional
    }

float64 state is cast to float32 (explicitly; openpi clients commonly send float64). Anything else that does
not fit raises WireError naming the key: every conversion of a client's value (to an array, a number in its
proto field's range, text) is checked here, so hostile input is answered INVALID_ARGUMENT, never INTERNAL.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format

from protos import policy_pb2 as pb
from protos.codec import WireError, encode_image, numpy_to_tensor, tensor_to_numpy

STATE_KEYS = ("state", "observation.state", "observation/state")
PROMPT_KEYS = ("prompt", "task")
IMAGE_PREFIXES = ("observation.images.", "observation/images/")

# (camera name, RGB uint8 [H, W, 3]) -> the frame to send; may raise WireError naming the camera.
PrepareImage = Callable[[str, npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]


def _pick(obs: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    found = [k for k in keys if k in obs]
    if len(found) > 1:
        raise WireError(found[1], f"give only one of {list(keys)}, got {found}")
    return (found[0], obs[found[0]]) if found else None


# Ranges of the proto integer fields filled from client values (assigning outside them raises ValueError).
INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)
UINT64_RANGE = (0, 2**64 - 1)


def _array(value: Any, key: str) -> npt.NDArray[Any]:
    """np.asarray, with what it raises on ragged or exotic input (ValueError, TypeError...) named by key."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise WireError(key, f"not convertible to an array ({type(exc).__name__}: {exc})") from None


def _as_float32_vector(value: Any, key: str) -> npt.NDArray[np.float32]:
    arr = _array(value, key)
    if arr.dtype not in (np.float32, np.float64):
        raise WireError(key, f"expected a float32 or float64 array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise WireError(key, f"expected a 1-D vector, got shape {list(arr.shape)}")
    return arr.astype(np.float32)


def _as_rgb(value: Any, key: str) -> npt.NDArray[np.uint8]:
    arr = _array(value, key)
    if arr.dtype != np.uint8:
        raise WireError(key, f"expected uint8 RGB image, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = np.transpose(arr, (1, 2, 0))
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise WireError(key, f"expected [H, W, 3] (or [3, H, W]), got shape {list(arr.shape)}")
    return np.ascontiguousarray(arr)


def collect_images(obs: Mapping[str, Any]) -> dict[str, npt.NDArray[np.uint8]]:
    """Camera name -> RGB uint8 [H, W, 3] from either the nested or the flat key convention."""
    images: dict[str, npt.NDArray[np.uint8]] = {}
    nested = obs.get("images")
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise WireError("images", f"expected a dict camera -> image, got {type(nested).__name__}")
        for name, img in nested.items():
            images[str(name)] = _as_rgb(img, f"images[{name}]")
    for key, value in obs.items():
        for prefix in IMAGE_PREFIXES:
            if isinstance(key, str) and key.startswith(prefix):
                name = key[len(prefix):]
                if name in images:
                    raise WireError(key, f"camera '{name}' given twice")
                images[name] = _as_rgb(value, key)
    return images


def _int(obs: Mapping[str, Any], key: str, value_range: tuple[int, int], default: int = 0, *,
         where: str | None = None) -> int:
    """An integer within its proto field's range (`where` names the field when it is nested)."""
    field = where or key
    value = obs.get(key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise WireError(field, f"expected an integer, got {type(value).__name__}")
    number = int(value)
    lo, hi = value_range
    if not lo <= number <= hi:
        raise WireError(field, f"{number} is outside the field's range {lo}..{hi}")
    return number


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise WireError(key, f"expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError) as exc:  # e.g. an integer beyond float range
        raise WireError(key, f"not representable as a float ({exc})") from None


def request_from_dict(
    obs: Mapping[str, Any],
    *,
    image_encoding: str = "raw",
    jpeg_quality: int = 90,
    request_id: int = 0,
    prepare_image: PrepareImage | None = None,
) -> pb.InferRequest:
    """Build an InferRequest from the dict convention above (no validation against a spec: the server does).

    `prepare_image` sees every frame once, after collection and its RGB checks and before encoding: the robot
    client fits frames to the policy's input size there, so each image is read from the dict exactly once.
    """
    if not isinstance(obs, Mapping):
        raise WireError("observation", f"expected a dict, got {type(obs).__name__}")
    picked_state = _pick(obs, STATE_KEYS)
    if picked_state is None:
        raise WireError("state", f"missing: give one of {list(STATE_KEYS)}")
    state_key, state_value = picked_state
    state = _as_float32_vector(state_value, state_key)
    prompt = ""
    picked_prompt = _pick(obs, PROMPT_KEYS)
    if picked_prompt is not None:
        prompt_key, prompt_value = picked_prompt
        if isinstance(prompt_value, bytes):
            try:
                prompt_value = prompt_value.decode("utf-8", errors="strict")
            except UnicodeDecodeError as exc:
                raise WireError(prompt_key, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not isinstance(prompt_value, str):
            raise WireError(prompt_key, f"expected a string, got {type(prompt_value).__name__}")
        prompt = prompt_value
    stamps = obs.get("image_timestamps", {}) or {}
    if not isinstance(stamps, Mapping):
        raise WireError("image_timestamps", "expected a dict camera -> seconds")
    # Built in place: copying a finished Observation into the request would copy every image again.
    request = pb.InferRequest(request_id=request_id)
    observation = request.observation
    for name, rgb in collect_images(obs).items():
        if prepare_image is not None:
            rgb = prepare_image(name, rgb)
        encode_image(
            rgb,
            image_encoding,
            jpeg_quality=jpeg_quality,
            capture_timestamp=_float(stamps.get(name, 0.0), f"image_timestamps[{name}]"),
            field=f"images[{name}]",
            out=observation.images[name],
        )
    observation.state.CopyFrom(numpy_to_tensor(state))
    observation.prompt = prompt
    observation.timestamp = _float(obs.get("timestamp", 0.0), "timestamp")
    observation.episode_index = _int(obs, "episode_index", INT64_RANGE)
    observation.step_index = _int(obs, "step_index", INT64_RANGE)
    rtc = obs.get("rtc")
    if rtc is not None:
        if not isinstance(rtc, Mapping) or "previous_chunk_remainder" not in rtc:
            raise WireError("rtc", "expected a dict with 'previous_chunk_remainder' and 'inference_delay_steps'")
        remainder = _array(rtc["previous_chunk_remainder"], "rtc.previous_chunk_remainder")
        if remainder.dtype not in (np.float32, np.float64):
            raise WireError("rtc.previous_chunk_remainder", f"expected float array, got {remainder.dtype}")
        observation.rtc.previous_chunk_remainder.CopyFrom(numpy_to_tensor(remainder.astype(np.float32)))
        observation.rtc.inference_delay_steps = _int(rtc, "inference_delay_steps", INT32_RANGE,
                                                     where="rtc.inference_delay_steps")
        observation.rtc.execution_horizon = _int(rtc, "execution_horizon", INT32_RANGE, where="rtc.execution_horizon")
    if obs.get("noise_seed") is not None:
        request.noise_seed = _int(obs, "noise_seed", UINT64_RANGE)
    return request


def message_to_dict(message: Any) -> dict[str, Any]:
    """A proto message as plain Python types (field names as in the .proto, defaults included)."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result


def response_to_dict(response: pb.InferResponse) -> dict[str, Any]:
    """An InferResponse in the openpi dict shape: `actions` [H, D] float32 plus timing and diagnostics."""
    actions = tensor_to_numpy(response.actions, "actions").astype(np.float32)
    t = response.timing
    return {
        "actions": actions,
        "observation_timestamp": response.observation_timestamp,
        "episode_index": response.episode_index,
        "step_index": response.step_index,
        "request_id": response.request_id,
        "replica": response.replica,
        "policy_timing": {"infer_ms": t.model_ms},
        "server_timing": {
            "validate_ms": t.validate_ms,
            "preprocess_ms": t.preprocess_ms,
            "model_ms": t.model_ms,
            "postprocess_ms": t.postprocess_ms,
            "total_ms": t.total_ms,
        },
        "norm_report": message_to_dict(response.norm_report),
        "warnings": [message_to_dict(w) for w in response.warnings],
    }
