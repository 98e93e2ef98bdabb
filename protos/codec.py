"""Conversions between numpy arrays / RGB images and the typed wire messages of policy.proto.

Both ends use these functions, so a tensor is packed and checked the same way on the robot and on the server.
Every decode checks dtype, shape and byte count and raises `WireError` naming the field, because a mis-sized
buffer reinterpreted silently is exactly the kind of failure this stack exists to refuse.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from protos import policy_pb2 as pb

# Largest number of elements a single tensor may declare (guards against shape-overflow allocations).
MAX_TENSOR_ELEMENTS = 1 << 28


class WireError(ValueError):
    """A message field does not hold what the contract says. `field` names it (e.g. "observation.state")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


_NP_TO_WIRE: dict[np.dtype[np.generic], pb.DType.ValueType] = {
    np.dtype(np.float32): pb.DTYPE_FLOAT32,
    np.dtype(np.float64): pb.DTYPE_FLOAT64,
    np.dtype(np.float16): pb.DTYPE_FLOAT16,
    np.dtype(np.uint8): pb.DTYPE_UINT8,
    np.dtype(np.int8): pb.DTYPE_INT8,
    np.dtype(np.int16): pb.DTYPE_INT16,
    np.dtype(np.int32): pb.DTYPE_INT32,
    np.dtype(np.int64): pb.DTYPE_INT64,
    np.dtype(np.bool_): pb.DTYPE_BOOL,
}
# bfloat16 travels as its raw 16-bit pattern; numpy has no bfloat16, so it decodes to float32.
_WIRE_TO_NP: dict[int, np.dtype[np.generic]] = {v: k for k, v in _NP_TO_WIRE.items()}
_WIRE_TO_NP[pb.DTYPE_BFLOAT16] = np.dtype("<u2")


def dtype_name(value: int) -> str:
    """Human-readable name of a wire dtype, e.g. 'float32' (for error messages)."""
    try:
        return pb.DType.Name(value).removeprefix("DTYPE_").lower()  # type: ignore[arg-type]
    except ValueError:
        return f"unknown({value})"


def numpy_to_tensor(array: npt.ArrayLike) -> pb.Tensor:
    """Pack an array as little-endian C-order bytes with its dtype and shape."""
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("=", "|") else arr.dtype
    key = np.dtype(native)
    if key not in _NP_TO_WIRE:
        raise WireError("tensor", f"dtype {arr.dtype} has no wire representation; use one of "
                        f"{sorted(str(d) for d in _NP_TO_WIRE)}")
    little = np.ascontiguousarray(arr, dtype=key.newbyteorder("<"))
    return pb.Tensor(dtype=_NP_TO_WIRE[key], shape=list(arr.shape), data=little.tobytes())


def tensor_to_numpy(tensor: pb.Tensor, field: str) -> npt.NDArray[np.generic]:
    """Unpack a Tensor into a (read-only) native-endian numpy array, checking dtype, shape and byte count."""
    if tensor.dtype not in _WIRE_TO_NP:
        raise WireError(f"{field}.dtype", f"unknown or unspecified dtype {dtype_name(tensor.dtype)}")
    shape = tuple(int(s) for s in tensor.shape)
    if any(s < 0 for s in shape):
        raise WireError(f"{field}.shape", f"dimensions must be >= 0, got {list(shape)}")
    count = math.prod(shape)
    if count > MAX_TENSOR_ELEMENTS:
        raise WireError(f"{field}.shape", f"{count} elements exceeds the limit of {MAX_TENSOR_ELEMENTS}")
    wire_dtype = _WIRE_TO_NP[tensor.dtype].newbyteorder("<")
    expected = count * wire_dtype.itemsize
    data = tensor.data  # each access of a bytes field copies it: read it once
    if len(data) != expected:
        raise WireError(
            f"{field}.data",
            f"shape {list(shape)} of {dtype_name(tensor.dtype)} needs {expected} bytes, got {len(data)}",
        )
    arr = np.frombuffer(data, dtype=wire_dtype).reshape(shape)
    if tensor.dtype == pb.DTYPE_BFLOAT16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if wire_dtype.byteorder == "<" and np.little_endian is False:  # pragma: no cover - big-endian hosts
        arr = arr.astype(wire_dtype.newbyteorder("="))
    return arr


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------

ENCODINGS: dict[str, pb.ImageEncoding.ValueType] = {
    "raw": pb.IMAGE_ENCODING_RAW_RGB8,
    "jpeg": pb.IMAGE_ENCODING_JPEG,
    "png": pb.IMAGE_ENCODING_PNG,
}
# The first bytes every file of each compressed encoding starts with, and its name in messages and PIL.
IMAGE_SIGNATURES: dict[int, tuple[str, bytes]] = {
    pb.IMAGE_ENCODING_JPEG: ("JPEG", b"\xff\xd8\xff"),
    pb.IMAGE_ENCODING_PNG: ("PNG", b"\x89PNG\r\n\x1a\n"),
}


def check_rgb_image(image: npt.NDArray[np.generic], field: str) -> npt.NDArray[np.uint8]:
    """Assert an image is RGB uint8 [H, W, 3] and return it typed."""
    if image.dtype != np.uint8:
        raise WireError(field, f"expected uint8 RGB image, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise WireError(field, f"expected shape [H, W, 3], got {list(image.shape)}")
    return image.astype(np.uint8, copy=False)


def encode_image(
    rgb: npt.NDArray[np.uint8],
    encoding: str = "raw",
    *,
    jpeg_quality: int = 90,
    capture_timestamp: float = 0.0,
    field: str = "image",
    out: pb.Image | None = None,
) -> pb.Image:
    """Encode an RGB uint8 [H, W, 3] image (raw bytes, JPEG or PNG) with its size and capture time.

    With `out` the image is written into that (e.g. map-entry) message in place: each protobuf message copy of
    a camera frame costs a full pass over its bytes, and a request holds several of them.
    """
    rgb = check_rgb_image(rgb, field)
    if encoding not in ENCODINGS:
        raise WireError(field, f"unknown image encoding '{encoding}'; expected one of {sorted(ENCODINGS)}")
    h, w = rgb.shape[:2]
    if encoding == "raw":
        data = np.ascontiguousarray(rgb).tobytes()
    else:
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if encoding == "jpeg" else []
        ok, buf = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", bgr, params)
        if not ok:
            raise WireError(field, f"{encoding} encoding failed")
        data = buf.tobytes()
    msg = pb.Image() if out is None else out
    msg.encoding = ENCODINGS[encoding]
    msg.height = h
    msg.width = w
    msg.data = data
    msg.capture_timestamp = capture_timestamp
    return msg


@dataclass(frozen=True)
class DecodedImage:
    rgb: npt.NDArray[np.uint8]
    capture_timestamp: float


def compressed_image_size(data: bytes, field: str) -> tuple[int, int]:
    """(height, width) from a JPEG/PNG header without decoding the pixels (cheap; refuses decompression bombs)."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception as exc:  # PIL raises several unrelated types for garbage input
        raise WireError(field, f"not a decodable JPEG/PNG image ({type(exc).__name__})") from None
    return int(height), int(width)


def check_image_signature(data: bytes, encoding: int, field: str) -> None:
    """Refuse bytes that are not the declared compressed encoding, naming what they are when we can tell.

    A decoder sniffs the real format and would decode a PNG labelled JPEG (or a GIF) without complaint; a
    message that misstates its payload is refused instead, so what a client declares is what it sends.
    """
    name, magic = IMAGE_SIGNATURES[encoding]
    if data.startswith(magic):
        return
    for other, (other_name, other_magic) in IMAGE_SIGNATURES.items():
        if other != encoding and data.startswith(other_magic):
            raise WireError(f"{field}.encoding", f"declared {name} but the data is a {other_name} image; "
                                                 "declare the encoding the bytes are in")
    raise WireError(f"{field}.data", f"not a decodable JPEG/PNG image: a {name} image starts with {magic!r}, "
                                     f"got {data[:len(magic)]!r}")


def _check_compressed_header(data: bytes, name: str, h: int, w: int, field: str) -> None:
    """The header of an encoded image: its format, a 3-channel RGB pixel mode and the declared size."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt, mode, bands = img.format, img.mode, len(img.getbands())
    except Exception as exc:  # PIL raises several unrelated types for garbage input
        raise WireError(f"{field}.data", f"not a decodable JPEG/PNG image ({type(exc).__name__})") from None
    if fmt != name:
        raise WireError(f"{field}.data", f"declared {name} but the data decodes as {fmt}")
    if mode != "RGB":
        raise WireError(f"{field}.data", f"expected a 3-channel RGB {name}, got {bands} channel(s) (mode {mode}); "
                                         "send colour frames as RGB, without alpha or palette")
    if (height, width) != (h, w):
        raise WireError(f"{field}.data", f"declared {h}x{w} but the encoded image is {height}x{width}")


def decode_image(image: pb.Image, field: str) -> DecodedImage:
    """Decode an Image message to RGB uint8 [H, W, 3], checking the declared size against the payload.

    JPEG/PNG payloads must be what `encoding` says (their signature and format), 3-channel RGB (a grayscale,
    RGBA or palette image would be converted silently by the decoder) and of the declared height and width.
    """
    h, w = int(image.height), int(image.width)
    if h <= 0 or w <= 0:
        raise WireError(f"{field}.height/width", f"must be positive, got {h}x{w}")
    if not math.isfinite(image.capture_timestamp):
        raise WireError(f"{field}.capture_timestamp", "must be finite")
    data = image.data  # each access of a bytes field copies it: read it once
    if image.encoding == pb.IMAGE_ENCODING_RAW_RGB8:
        expected = h * w * 3
        if len(data) != expected:
            raise WireError(f"{field}.data", f"raw RGB8 {h}x{w} needs {expected} bytes, got {len(data)}")
        rgb: npt.NDArray[np.uint8] = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
    elif image.encoding in IMAGE_SIGNATURES:
        check_image_signature(data, image.encoding, field)
        _check_compressed_header(data, IMAGE_SIGNATURES[image.encoding][0], h, w, field)
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape != (h, w, 3):
            raise WireError(f"{field}.data", "could not decode the encoded image")
        rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    else:
        raise WireError(
            f"{field}.encoding",
            f"unknown or unspecified encoding {image.encoding}; expected RAW_RGB8, JPEG or PNG",
        )
    return DecodedImage(rgb=rgb, capture_timestamp=float(image.capture_timestamp))
