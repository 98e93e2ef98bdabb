"""MP4 encode/decode with PyAV, and the mapping of decoded frames to dataset timestamps.

Why PyAV and never OpenCV: LeRobot >= 0.5 writes AV1 video, and OpenCV's reader returns 0 frames from AV1
files without raising. PyAV decodes AV1 with libdav1d. Every decode here checks the number of frames it found
against the episode length, so an empty or misaligned stream is an error, never an empty camera.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from robodata.dataset import DatasetError, ImageArray

# Encoder name -> codec name a reader reports (what LeRobot writes into `video.codec`).
ENCODERS: dict[str, str] = {"libsvtav1": "av1", "libx264": "h264", "h264": "h264", "mpeg4": "mpeg4"}


@dataclass(frozen=True)
class VideoEncoding:
    """How camera streams are encoded. Defaults match LeRobot >= 0.5 (AV1, yuv420p, GOP 2, CRF 30)."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    gop: int | None = 2
    crf: int | None = 30
    # Only for codecs without CRF (mpeg4): target bit rate in bits/s.
    bit_rate: int = 2_000_000

    def __post_init__(self) -> None:
        if self.codec not in ENCODERS:
            raise DatasetError(f"video codec '{self.codec}' not supported; choose one of {sorted(ENCODERS)}")
        if self.gop is not None and self.gop < 1:
            raise DatasetError(f"video gop must be >= 1, got {self.gop}")

    def options(self) -> dict[str, str]:
        opts: dict[str, str] = {}
        if self.gop is not None:
            opts["g"] = str(self.gop)
        if self.crf is not None and self.codec != "mpeg4":
            opts["crf"] = str(self.crf)
        if self.codec in ("libx264", "h264"):
            opts["preset"] = "fast"
        return opts


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class VideoStreamWriter:
    """Encodes RGB uint8 frames into one mp4 file, frame k at pts k / fps.

    Frames keep counting across `write` calls, so several episodes written in turn end up concatenated with
    continuous timestamps (LeRobot v3's one-file-per-camera layout); the caller records each episode's
    [from, to) seconds from `frames_written` before and after.
    """

    def __init__(self, path: Path, fps: float, height: int, width: int, encoding: VideoEncoding) -> None:
        if height % 2 or width % 2:
            raise DatasetError(
                f"{path}: video frames must have even height and width for yuv420p, got {height}x{width}"
            )
        # SVT-AV1 prints its banner to stderr unless told otherwise; keep a user's explicit setting.
        os.environ.setdefault("SVT_LOG", "1")
        self.path = path
        self.height = height
        self.width = width
        self.fps = fps
        self.frames_written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        rate = _fps_fraction(fps)
        self._container = av.open(str(path), mode="w")
        stream = self._container.add_stream(encoding.codec, rate=rate)
        if not isinstance(stream, av.VideoStream):
            raise DatasetError(f"{path}: codec '{encoding.codec}' did not open a video stream")
        self._stream = stream
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = encoding.pix_fmt
        self._stream.codec_context.time_base = 1 / rate
        if encoding.codec == "mpeg4":
            self._stream.bit_rate = encoding.bit_rate
        options: dict[str, object] = dict(encoding.options())
        self._stream.options = options
        self._time_base = 1 / rate
        self._closed = False

    def write(self, frames: ImageArray) -> None:
        if self._closed:
            raise DatasetError(f"{self.path}: video writer is closed")
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise DatasetError(
                f"{self.path}: frames must be uint8 [N, {self.height}, {self.width}, 3], "
                f"got {frames.dtype} {frames.shape}"
            )
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = self._time_base
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._closed = True

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


class VideoConcatenator:
    """Appends independently encoded mp4 segments into one file by remuxing (no re-encode).

    This is how LeRobot v3 builds its per-camera files: each episode is encoded on its own (so it starts on a
    key frame and its exact size is known before it is placed) and then appended with its timestamps shifted
    by the duration already in the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w")
        self._stream: av.video.stream.VideoStream | None = None
        self.duration_s = 0.0
        self.segments = 0
        self._closed = False

    def append(self, segment: Path, duration_s: float) -> tuple[float, float]:
        """Remux all packets of `segment` after what is already in the file; returns its [from, to) seconds."""
        if self._closed:
            raise DatasetError(f"{self.path}: concatenator is closed")
        start = self.duration_s
        with av.open(str(segment)) as src:
            if not src.streams.video:
                raise DatasetError(f"{segment}: no video stream to append")
            in_stream = src.streams.video[0]
            if self._stream is None:
                out_stream = self._container.add_stream_from_template(in_stream, opaque=True)
                if not isinstance(out_stream, av.video.stream.VideoStream):
                    raise DatasetError(f"{self.path}: could not create a video stream from {segment}")
                self._stream = out_stream
            for packet in src.demux(in_stream):
                if packet.dts is None or packet.time_base is None:
                    continue  # the demuxer's empty flush packet
                shift = int(round(start / packet.time_base))
                packet.dts += shift
                if packet.pts is not None:
                    packet.pts += shift
                packet.stream = self._stream
                self._container.mux(packet)
        self.duration_s = start + duration_s
        self.segments += 1
        return start, self.duration_s

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if not self._closed:
            self._container.close()
            self._closed = True


def encode_video(path: Path, frames: ImageArray, fps: float, encoding: VideoEncoding) -> None:
    """Encode RGB uint8 frames [N, H, W, 3] into a new mp4 file."""
    writer = VideoStreamWriter(path, fps, frames.shape[1], frames.shape[2], encoding)
    try:
        writer.write(frames)
    finally:
        writer.close()


def probe_video_info(path: Path) -> dict[str, object]:
    """The `info` block LeRobot stores for a video feature, read from the file itself."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DatasetError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.base_rate or stream.average_rate
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(round(float(rate))) if rate is not None else None,
            "video.channels": 3,
            "has_audio": len(container.streams.audio) > 0,
        }


def decode_video_frames(
    path: Path,
    targets_s: npt.NDArray[np.float64],
    tolerance_s: float,
    segment: tuple[float, float] | None,
    strict_count: bool = True,
    label: str = "",
) -> ImageArray:
    """Decode the frames of one episode and return the one nearest each target time, RGB uint8 [T, H, W, 3].

    `targets_s` are positions inside the file (seconds). `segment` = [start, end) seconds of the episode inside
    the file (LeRobot v3's from/to timestamps); None means the whole file (LeRobot v2.1's per-episode file).
    Frames whose time lies in [start - tol, end - tol) belong to the episode. With `strict_count` their number
    must equal the number of targets; every target must have a decoded frame within `tolerance_s`.
    """
    where = f"{path}{f' ({label})' if label else ''}"
    if not path.is_file():
        raise DatasetError(f"{where}: video file not found")
    n = len(targets_s)
    if n == 0:
        raise DatasetError(f"{where}: no frame timestamps to decode")
    start, end = segment if segment is not None else (-math.inf, math.inf)
    times: list[float] = []
    images: list[ImageArray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{where}: no video stream in file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first_needed = max(start, float(np.min(targets_s))) - tolerance_s
            if first_needed > 0 and stream.time_base is not None:
                container.seek(
                    int(first_needed / stream.time_base), stream=stream, backward=True, any_frame=False
                )
            for frame in container.decode(stream):
                if frame.time is None:
                    raise DatasetError(f"{where}: decoded a frame without a timestamp")
                t = float(frame.time)
                if t < start - tolerance_s:
                    continue
                if t >= end - tolerance_s:
                    break
                times.append(t)
                images.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
    except av.FFmpegError as err:
        raise DatasetError(f"{where}: cannot decode video: {err}") from err
    if strict_count and len(times) != n:
        span = f"[{start:.4f}, {end:.4f}) s" if segment is not None else "the whole file"
        raise DatasetError(
            f"{where}: decoded {len(times)} frames in {span} but the episode has {n} frames "
            f"(frame count must match; the video may be truncated, empty, or misaligned)"
        )
    if not times:
        raise DatasetError(f"{where}: decoded 0 frames; expected {n}")
    decoded_t = np.asarray(times, dtype=np.float64)
    order = np.argsort(decoded_t, kind="stable")
    decoded_t = decoded_t[order]
    pos = (
        np.clip(np.searchsorted(decoded_t, targets_s), 1, len(decoded_t) - 1) if len(decoded_t) > 1 else None
    )
    if pos is None:
        nearest = np.zeros(n, dtype=np.int64)
    else:
        left = pos - 1
        choose_left = np.abs(targets_s - decoded_t[left]) <= np.abs(decoded_t[pos] - targets_s)
        nearest = np.where(choose_left, left, pos)
    err_s = np.abs(decoded_t[nearest] - targets_s)
    bad = np.flatnonzero(err_s > tolerance_s)
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{where}: frame {i} at {targets_s[i]:.4f} s has no decoded frame within {tolerance_s:.4f} s "
            f"(nearest is {decoded_t[nearest[i]]:.4f} s); {bad.size} frames affected"
        )
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        raise DatasetError(f"{where}: decoded frames change size mid-stream: {sorted(shapes)}")
    stacked = np.stack(images)[order]
    return np.ascontiguousarray(stacked[nearest])
